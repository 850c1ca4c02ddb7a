// `npm run bench [-- name ...]`: runs every bench/<name>.bench.ts (or the named ones) one after
// another and writes their sections to docs/BENCHMARKS.md. Each benchmark measures its baseline in
// the same run and reports the ratio against the docs/DESIGN.md §9 target.
import { readdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface BenchResult {
  title: string;
  markdown: string;
}

const benchDir = dirname(fileURLToPath(import.meta.url));
// Sub-millisecond benchmarks first, on a quiet kernel; the ones that start a thousand replicas
// last: tearing down a thousand cgroups and namespaces goes on in kernel workers for seconds after
// a benchmark ends, and slows whatever runs then.
const ORDER = [
  'spawn',
  'exit-detect',
  'restart',
  'kube',
  'reconcile',
  'bpf',
  'mesh',
  'autoscale',
  'tui',
  'runtime-footprint',
  'startup',
  'e2e',
];
/** Pause between benchmarks, for that background teardown to finish. */
const SETTLE_MS = 10_000;
/**
 * Before the end-to-end benchmark, which creates thousands of files: ext4 without a journal
 * allocates past inodes deleted in the last 60 s (recently_deleted()), reading each one's inode
 * table block, and the footprint benchmark just deleted the files of a thousand replicas.
 */
const SETTLE_BEFORE_MS: Record<string, number> = { e2e: 90_000 };
const rank = (name: string) => {
  const i = ORDER.indexOf(name.replace(/\.bench\.ts$/, ''));
  return i < 0 ? ORDER.length : i;
};

const wanted = new Set(process.argv.slice(2));
const files = readdirSync(benchDir)
  .filter((name) => name.endsWith('.bench.ts'))
  .filter((name) => wanted.size === 0 || wanted.has(name.replace(/\.bench\.ts$/, '')))
  .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1));
if (files.length === 0) {
  console.error(`no benchmark matches ${[...wanted].join(', ')}; have: ${readdirSync(benchDir).join(', ')}`);
  process.exit(2);
}

const sections: string[] = [];
let failed = 0;
for (const [index, file] of files.entries()) {
  const settle = SETTLE_BEFORE_MS[file.replace(/\.bench\.ts$/, '')] ?? SETTLE_MS;
  if (index > 0) await sleep(settle);
  const started = performance.now();
  console.log(`\n== ${file}`);
  try {
    const module = (await import(pathToFileURL(join(benchDir, file)).href)) as {
      default: () => Promise<BenchResult>;
    };
    const result = await module.default();
    console.log(result.markdown);
    sections.push(
      `## ${result.title}\n\n${result.markdown.trim()}\n\n_${file}, ${((performance.now() - started) / 1000).toFixed(1)} s_\n`,
    );
  } catch (error) {
    failed++;
    console.error(`${file} failed:`, error);
    sections.push(`## ${file}\n\nFailed in this run: ${String(error)}\n`);
  }
}

const cpu = cpus()[0]?.model ?? 'unknown CPU';
const header = [
  '# Benchmarks',
  '',
  'Written by `npm run bench` (bench/run.ts); every ratio compares against a baseline measured in',
  'the same run on the same machine. Targets are those of docs/DESIGN.md §9.',
  '',
  `Machine: ${cpus().length} × ${cpu}, Linux ${release()}, Node ${process.version}. Run: ${new Date().toISOString()}.`,
  '',
].join('\n');
if (wanted.size === 0) {
  writeFileSync(join(benchDir, '..', 'docs', 'BENCHMARKS.md'), `${header}\n${sections.join('\n')}`);
  console.log('\nwrote docs/BENCHMARKS.md');
} else {
  console.log('\n(subset run: docs/BENCHMARKS.md left as it is)');
}
process.exit(failed > 0 ? 1 : 0);
