/**
 * Issue 14's targets for `orrery tui` with 1,000 replicas on the local control plane: keypress →
 * frame drawn p95 ≤ 50 ms, first frame ≤ 1 s, idle CPU ≤ 2 % of a core, RSS ≤ 150 MiB.
 *
 * A control plane of its own with 250 Instances and 1,000 Replicas (objects only: no operator or
 * runtime runs, so nothing changes under the view but the ages). `orrery tui` runs in a tmux pane
 * of 200×50 (bin/orrery.js, as a user starts it), read with capture-pane and typed into with
 * send-keys. First frame: from the spawn until every watch has synced and the Instances view
 * shows all 250; the median of five starts, since one start's moves by hundreds of ms. Keypress
 * → frame: `j` moves the selection in the Replicas view (1,000 rows); timed from send-keys until
 * a capture shows the selection on the next row. Both include tmux's own round trips, so the
 * baseline in the same run is the same measurement of a shell loop that redraws a counter on each
 * key: what tmux and the polling cost by themselves. Then the TUI's CPU (utime + stime from
 * /proc) over 30 s left alone, and its RSS.
 *
 * What runs is the checkout's bin/orrery.js, which has Node strip the types of the .ts sources;
 * Node's compile cache keeps the result, so only a first start after a change pays for the
 * stripper (its WebAssembly, ~100 ms and ~20 MiB of RSS). The TUI is started once and quit before
 * the measured start, so that start is every later one, as the installed package's (dist/, plain
 * JavaScript) is: with the cache warm both load the same code (measured: the same RSS).
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startControlPlane } from '../controlplane/controlplane.ts';
import { installCrds } from '../crds/install.ts';
import { INSTANCES, REPLICAS } from '../crds/resources.ts';
import type { Instance, Replica } from '../crds/types.ts';
import { type Applied, ensureNamespace, KubeApi, loadKubeConfig, resourceClient } from '../kube/index.ts';
import { forEachLimited } from '../platform/concurrency.ts';
import { cpuTimes, memoryOf, rssKiB } from './proc.ts';
import { median, quantile, summarize } from './stats.ts';

const INSTANCE_COUNT = 250;
const PER_INSTANCE = 4;
const KEYS = 60;
const IDLE_SECONDS = 30;
/** Measured starts of the TUI, for the first frame. */
const STARTS = 5;
const NS = 'bench-tui';
const orrery = fileURLToPath(new URL('../bin/orrery.js', import.meta.url));

/** A tmux server of this benchmark's own (its own socket), one session of 200×50. */
class Pane {
  readonly #dir = mkdtempSync(join(tmpdir(), 'orrery-bench-tui-'));
  readonly #socket = join(this.#dir, 'socket');

  tmux(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) =>
      execFile('tmux', ['-S', this.#socket, ...args], { encoding: 'utf8' }, (err, out) =>
        err ? reject(err) : resolve(out),
      ),
    );
  }

  async start(command: string): Promise<void> {
    await this.tmux('new-session', '-d', '-s', 'b', '-x', '200', '-y', '50', command);
  }

  async screen(styled = false): Promise<string[]> {
    return (await this.tmux('capture-pane', '-p', ...(styled ? ['-e'] : []), '-t', 'b')).split('\n');
  }

  /** Polls (as fast as capture-pane answers) until `check` holds; ms from `since`. */
  async until(
    check: (screen: string[]) => boolean,
    since: number,
    styled = false,
    timeoutMs = 30_000,
  ): Promise<number> {
    for (;;) {
      const screen = await this.screen(styled);
      const at = performance.now();
      if (check(screen)) return at - since;
      if (at - since > timeoutMs) throw new Error(`timed out; the screen:\n${screen.join('\n')}`);
    }
  }

  async pid(): Promise<number> {
    return Number((await this.tmux('list-panes', '-t', 'b', '-F', '#{pane_pid}')).trim());
  }

  close(): void {
    try {
      execFileSync('tmux', ['-S', this.#socket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // gone already
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const INVERSE = `${String.fromCharCode(27)}[7m`;

/** The row drawn inverse (the TUI's selection), as text: it changes when `j` moves or scrolls. */
const selectedRow = (styled: string[]) => styled.find((line) => line.includes(INVERSE));

/** Keypress → the next frame, `count` times: the TUI's `j` moving its selection one row down (or scrolling under it). */
async function tuiKeys(pane: Pane, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const before = selectedRow(await pane.screen(true));
    const t0 = performance.now();
    await pane.tmux('send-keys', '-t', 'b', 'j');
    out.push(await pane.until((s) => selectedRow(s) !== before, t0, true, 5000));
  }
  return out;
}

/** The same through a shell loop that prints a counter on each key: tmux and polling alone. */
async function baselineKeys(count: number): Promise<number[]> {
  const pane = new Pane();
  try {
    await pane.start(
      `bash -c ${shellQuote('i=0; while IFS= read -rsn1 k; do i=$((i+1)); printf "\\rkey %d" $i; done')}`,
    );
    await sleep(300);
    const out: number[] = [];
    for (let i = 1; i <= count; i++) {
      const t0 = performance.now();
      await pane.tmux('send-keys', '-t', 'b', 'j');
      out.push(await pane.until((s) => s.some((l) => l.trim() === `key ${i}`), t0, false, 5000));
    }
    return out;
  } finally {
    pane.close();
  }
}

async function objects(kubeconfig: string): Promise<void> {
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
  try {
    await ensureNamespace(api, NS, 'bench');
    const instances = resourceClient(api, INSTANCES, 'bench');
    const replicas = resourceClient(api, REPLICAS, 'bench');
    const names = Array.from({ length: INSTANCE_COUNT }, (_, i) => `app-${String(i).padStart(3, '0')}`);
    const template = { processes: [{ name: 'server', command: ['sleep', 'infinity'] }] };
    await forEachLimited(names, 16, async (name) => {
      await instances.create({
        metadata: { name, namespace: NS, labels: { app: name } },
        spec: { replicas: PER_INSTANCE, template: { metadata: { labels: { app: name } }, ...template } },
      } as Applied<Instance>);
      for (let ordinal = 0; ordinal < PER_INSTANCE; ordinal++) {
        await replicas.create({
          metadata: {
            name: `${name}-${ordinal}`,
            namespace: NS,
            labels: { 'orrery.dev/instance': name, app: name },
          },
          spec: { instance: name, ordinal, host: 'bench-host', template },
        } as Applied<Replica>);
      }
    });
  } finally {
    api.close();
  }
}

export default async function tuiBench(): Promise<{ title: string; markdown: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'orrery-bench-tui-cp-'));
  const plane = await startControlPlane({ dataDir });
  const pane = new Pane();
  try {
    await installCrds(loadKubeConfig({ kubeconfig: plane.kubeconfig }));
    await objects(plane.kubeconfig);
    const baseline = await baselineKeys(KEYS);

    const command = ['exec', process.execPath, orrery, 'tui', '--kubeconfig', plane.kubeconfig, '-n', NS]
      .map((a, i) => (i === 0 ? a : shellQuote(a)))
      .join(' ');
    const shown = (s: string[]) =>
      s.some((l) => l.includes(`Instances(${NS})[${INSTANCE_COUNT}]`)) &&
      !s.some((l) => l.includes('loading…'));
    // A first start fills the compile cache (see above); it is not measured.
    const warm = new Pane();
    try {
      await warm.start(command);
      await warm.until(shown, performance.now());
      await warm.tmux('send-keys', '-t', 'b', 'q');
      // Its exit writes the cache.
      await sleep(1000);
    } finally {
      warm.close();
    }
    const load = loadavg();
    // The first frame moves by hundreds of ms from one start to the next (the API server's lists,
    // the machine): several starts, each quit once drawn, and the median of them with the last.
    const firstFrames: number[] = [];
    for (let i = 1; i < STARTS; i++) {
      const once = new Pane();
      try {
        const t0 = performance.now();
        await once.start(command);
        firstFrames.push(await once.until(shown, t0));
        await once.tmux('send-keys', '-t', 'b', 'q');
        await sleep(500);
      } finally {
        once.close();
      }
    }
    const t0 = performance.now();
    await pane.start(command);
    firstFrames.push(await pane.until(shown, t0));
    const firstFrame = median(firstFrames);
    const pid = await pane.pid();
    await pane.tmux('send-keys', '-t', 'b', '-l', ':rep');
    await pane.tmux('send-keys', '-t', 'b', 'Enter');
    await pane.until(
      (s) => s.some((l) => l.includes(`Replicas(${NS})[${INSTANCE_COUNT * PER_INSTANCE}]`)),
      performance.now(),
    );
    const keys = await tuiKeys(pane, KEYS);

    await sleep(2000);
    const busy = () => {
      const c = cpuTimes(pid);
      return c.user + c.system;
    };
    const cpu0 = busy();
    await sleep(IDLE_SECONDS * 1000);
    const idlePercent = ((busy() - cpu0) / IDLE_SECONDS) * 100;
    const rss = rssKiB(pid) * 1024;
    const mem = memoryOf(pid);
    const loadEnd = loadavg();

    const k = summarize(keys);
    const b = summarize(baseline);
    const p95 = quantile(keys, 0.95);
    const b95 = quantile(baseline, 0.95);
    const ms = (n: number) => `${n.toFixed(1)} ms`;
    const mib = (bytes: number) => (bytes / 1048576).toFixed(1);
    const markdown = [
      `\`orrery tui\` in a 200×50 tmux pane against the local control plane holding ${INSTANCE_COUNT} Instances and`,
      `${INSTANCE_COUNT * PER_INSTANCE} Replicas (objects only). Keypress → frame: \`j\` in the Replicas view, from send-keys until a`,
      'capture shows the selection moved; the baseline is the same measurement of a shell loop redrawing a',
      `counter per key (tmux and the polling alone). ${KEYS} keys each.`,
      '',
      '| measure | orrery tui | baseline (shell loop) | target |',
      '|---|---|---|---|',
      `| keypress → frame, p50 | ${ms(k.p50)} | ${ms(b.p50)} | |`,
      `| keypress → frame, p95 | ${ms(p95)} | ${ms(b95)} | ≤ 50 ms (${(p95 / 50).toFixed(2)}×) |`,
      `| keypress → frame, max | ${ms(k.max)} | ${ms(b.max)} | |`,
      `| first frame (every watch synced, ${INSTANCE_COUNT} Instances shown), median of ${STARTS} starts | ${ms(firstFrame)} (${firstFrames.map((f) => f.toFixed(0)).join(', ')}) | | ≤ 1 s (${(firstFrame / 1000).toFixed(2)}×) |`,
      `| CPU over ${IDLE_SECONDS} s left alone | ${idlePercent.toFixed(2)} % of a core | | ≤ 2 % (${(idlePercent / 2).toFixed(2)}×) |`,
      `| RSS | ${(rss / 1048576).toFixed(1)} MiB | | ≤ 150 MiB (${(rss / 1048576 / 150).toFixed(2)}×) |`,
      '',
      `Of the RSS (/proc/PID/smaps_rollup): ${mib(mem.private)} MiB private (pages only this process maps), ${mib(mem.shared)} MiB shared with other processes (the node binary's pages, libraries), ${mib(mem.hugeFile)} MiB of file pages mapped 2 MiB at a time; PSS ${mib(mem.pss)} MiB. Its own memory (anonymous pages: V8's heap, Yoga's WebAssembly memory, malloc), which does not move with the page cache: ${mib(mem.anonymous)} MiB.`,
      '',
      `Load average (1, 5, 15 min) at the measured start: ${load.map((l) => l.toFixed(2)).join(', ')}; at the end: ${loadEnd.map((l) => l.toFixed(2)).join(', ')} (2 cores).`,
    ].join('\n');
    return { title: '`orrery tui` with 1,000 replicas', markdown };
  } finally {
    pane.close();
    await plane.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await tuiBench();
  console.log(`# ${r.title}\n\n${r.markdown}`);
}
