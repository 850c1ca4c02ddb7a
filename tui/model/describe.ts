// What `d` shows: the object as YAML (as the cache holds it: managedFields are dropped there),
// then its recent Events the way `kubectl describe` lists them.
import { stringify } from 'yaml';
import type { CoreEvent, KubeObject } from '../../kube/index.ts';
import { age, since } from './format.ts';
import { eventTime } from './rows.ts';

/** How many of an object's Events describe lists, newest last as kubectl does. */
const MAX_EVENTS = 20;

export function describeLines(obj: KubeObject, events: readonly CoreEvent[], now: number): string[] {
  const lines = stringify(obj, { lineWidth: 0 }).trimEnd().split('\n');
  lines.push('', 'Events:');
  if (events.length === 0) {
    lines.push('  <none>');
    return lines;
  }
  const recent = [...events]
    .sort((a, b) => (since(eventTime(b), now) ?? 0) - (since(eventTime(a), now) ?? 0))
    .slice(-MAX_EVENTS);
  const rows = recent.map((ev) => [
    ev.type ?? '',
    ev.reason ?? '',
    (ev.count ?? 1) > 1 ? `${age(eventTime(ev), now)} (x${ev.count})` : age(eventTime(ev), now),
    ev.source?.component ?? ev.reportingComponent ?? '',
    (ev.message ?? '').replace(/\s+/g, ' '),
  ]);
  const header = ['Type', 'Reason', 'Age', 'From', 'Message'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    `  ${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   ')}`;
  lines.push(line(header), line(header.map((h) => '-'.repeat(h.length))), ...rows.map(line));
  return lines;
}
