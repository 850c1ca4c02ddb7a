// The run-level sweep of `npm test` (hack/test.ts): once ava is done, however it ended (pass,
// fail, Ctrl-C), kill what this run's tests started and left running, and remove the
// `orrery-test-*` cgroups they left, in every cgroup hierarchy mounted.
//
// What is this run's: hack/test.ts gives ava a run id in ORRERY_TEST_RUN, which every process a
// test starts inherits (workers, agents, operators, `orrery up` and its children), so a process
// is killed only when its /proc/<pid>/environ carries this exact id. Workloads do not inherit it
// (the runtime gives them exactly their spec's environment); they die with their cgroups.
//
// cgroups carry no environment. Other test runs may be going on at the same time on this machine
// (`npx ava <file>` in another shell, another clone), and their cgroups look the same. So: with no
// other test run alive, every `orrery-test-*` cgroup is a leftover and is removed; while one is,
// only cgroups named with this run's id (`orrery-test-<run>-...`, as test/helpers/engine-harness
// names them) are removed, and the others are listed as kept.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BPFFS, unpinSocketLb } from '../node-runtime/bpf/index.ts';
import { parseMountinfo } from '../node-runtime/cgroups/detect.ts';
import { killCgroup } from '../node-runtime/cgroups/kill.ts';
import { childCgroups, removeCgroupDir } from '../node-runtime/cgroups/manager.ts';
import type { ReplicaCgroupFiles } from '../node-runtime/cgroups/paths.ts';

/** The environment variable carrying the run id, set by hack/test.ts for ava and all below it. */
export const RUN_ENV = 'ORRERY_TEST_RUN';
/** The prefix of every cgroup (parent) the tests make at a hierarchy's root. */
export const TEST_CGROUP_PREFIX = 'orrery-test-';

export interface SweepOptions {
  runId: string;
  /** When the run started (ms since the epoch): tells this run's cgroups from older leftovers in the report. */
  startedAt: number;
  log: (line: string) => void;
  /** Pids never touched (hack/test.ts itself). */
  exclude?: number[];
  /** SIGTERM first, SIGKILL what is still there after this long; default 3 s. */
  graceMs?: number;
  /** Report what would be done, do nothing. */
  dryRun?: boolean;
}

export interface SweptProcess {
  pid: number;
  command: string;
  /** How it ended: 'SIGTERM', 'SIGKILL', or 'would kill' on a dry run. */
  how: string;
}

export interface SweptCgroup {
  name: string;
  dirs: string[];
  /** Pids that were in it (killed). */
  pids: number[];
  /** Its directory predates this run (ctime): left by an earlier run. */
  older: boolean;
}

export interface SweepResult {
  killed: SweptProcess[];
  removed: SweptCgroup[];
  /** Fast-path pin directories removed from bpffs. */
  unpinned: string[];
  kept: { name: string; why: string }[];
  errors: string[];
}

interface ProcessInfo {
  pid: number;
  startTime: string;
  state: string;
  argv: string[];
  environ: string[];
}

/** Whether a process environment (NUL-separated, as /proc/<pid>/environ) carries `RUN_ENV=runId`. */
export function marksRun(environ: string[], runId: string): boolean {
  return runId !== '' && environ.includes(`${RUN_ENV}=${runId}`);
}

/** Whether a command line is a test runner: ava (cli or worker) or hack/test.ts. */
export function isTestRunner(argv: string[]): boolean {
  return argv.some((arg) => /node_modules\/(\.bin\/ava$|ava\/)|(^|\/)hack\/test\.ts$/.test(arg));
}

/** Whether a cgroup name was made by the run `runId` (`orrery-test-<run>-<random>`). */
export function namedForRun(name: string, runId: string): boolean {
  return runId !== '' && name.startsWith(`${TEST_CGROUP_PREFIX}${runId}-`);
}

/** `pid`'s stat state, start time, argv and environment; undefined when gone or unreadable. */
function processInfo(pid: number): ProcessInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const split = (file: string) => readFileSync(`/proc/${pid}/${file}`, 'utf8').split('\0').filter(Boolean);
    return {
      pid,
      state: fields[0] ?? '?',
      startTime: fields[19] ?? '?',
      argv: split('cmdline'),
      environ: split('environ'),
    };
  } catch {
    return undefined;
  }
}

function allProcesses(): ProcessInfo[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => processInfo(Number(name)) ?? []);
}

/** Still the same process (pid and start time), alive and not a zombie. */
function stillThere(p: ProcessInfo): boolean {
  const now = processInfo(p.pid);
  return now !== undefined && now.startTime === p.startTime && now.state !== 'Z' && now.state !== 'X';
}

function signal(p: ProcessInfo, sig: NodeJS.Signals): void {
  // The start time is checked right before the kill: the pid cannot have been recycled since.
  if (!stillThere(p)) return;
  try {
    process.kill(p.pid, sig);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

const commandOf = (p: ProcessInfo) => p.argv.join(' ').slice(0, 160);

async function killMarked(options: SweepOptions, result: SweepResult): Promise<void> {
  const exclude = new Set([process.pid, ...(options.exclude ?? [])]);
  const marked = allProcesses().filter(
    (p) => !exclude.has(p.pid) && p.state !== 'Z' && marksRun(p.environ, options.runId),
  );
  if (options.dryRun) {
    for (const p of marked) result.killed.push({ pid: p.pid, command: commandOf(p), how: 'would kill' });
    return;
  }
  for (const p of marked) signal(p, 'SIGTERM');
  const deadline = Date.now() + (options.graceMs ?? 3_000);
  while (marked.some(stillThere) && Date.now() < deadline) await sleep(20);
  for (const p of marked) {
    const stubborn = stillThere(p);
    if (stubborn) signal(p, 'SIGKILL');
    result.killed.push({ pid: p.pid, command: commandOf(p), how: stubborn ? 'SIGKILL' : 'SIGTERM' });
  }
}

/** Mount points of every cgroup hierarchy (v2 and each v1 one, named ones included), from the product's parser. */
export function cgroupMounts(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const mounts = parseMountinfo(mountinfo).filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2');
  return [...new Set(mounts.map((m) => m.mountPoint))];
}

/** `dir` and every cgroup below it, deepest first. */
function subtree(dir: string): string[] {
  if (!exists(dir)) return [];
  return [...childCgroups(dir).flatMap((name) => subtree(join(dir, name))), dir];
}

function procsOf(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

function exists(file: string): boolean {
  return statSync(file, { throwIfNoEntry: false }) !== undefined;
}

/** Kills everything in the cgroup `dirs` (one name in several hierarchies) and removes them, deepest first. */
export async function removeCgroup(dirs: string[]): Promise<number[]> {
  const pids = () => [...new Set(dirs.flatMap(subtree).flatMap(procsOf))];
  const found = pids();
  const files: ReplicaCgroupFiles = {};
  for (const dir of dirs) {
    if (exists(join(dir, 'cgroup.kill'))) files.kill = join(dir, 'cgroup.kill');
    if (exists(join(dir, 'cgroup.freeze'))) files.freeze = { file: join(dir, 'cgroup.freeze'), kind: 'v2' };
    else if (!files.freeze && exists(join(dir, 'freezer.state')))
      files.freeze = { file: join(dir, 'freezer.state'), kind: 'v1' };
  }
  await killCgroup({ files, pids });
  for (const dir of dirs.flatMap(subtree)) await removeCgroupDir(dir);
  return found;
}

/**
 * Why test leftovers not named for this run must stay: another test run is active (looked for
 * after this run's own processes are gone, so any test runner left is another run's).
 */
function otherRunActive(options: SweepOptions): string | undefined {
  const others = allProcesses().filter(
    (p) =>
      p.pid !== process.pid && p.state !== 'Z' && isTestRunner(p.argv) && !marksRun(p.environ, options.runId),
  );
  if (others.length === 0) return undefined;
  return `another test run is active (${others
    .slice(0, 3)
    .map((p) => `pid ${p.pid} ${commandOf(p).slice(0, 80)}`)
    .join('; ')})`;
}

/**
 * The kernel fast path's pins of test agents (`/sys/fs/bpf/<cgroup parent>`, the parent being an
 * `orrery-test-*` name): an agent SIGKILLed by a test leaves its programs and maps pinned, as a
 * restarted agent needs them.
 */
function removeTestPins(options: SweepOptions, result: SweepResult): void {
  const names = (existsSync(BPFFS) ? readdirSync(BPFFS) : []).filter((n) => n.startsWith(TEST_CGROUP_PREFIX));
  if (names.length === 0) return;
  const busy = otherRunActive(options);
  for (const name of names) {
    if (busy !== undefined && !namedForRun(name, options.runId)) {
      result.kept.push({ name: `${BPFFS}/${name}`, why: busy });
      continue;
    }
    if (options.dryRun) {
      result.unpinned.push(name);
      continue;
    }
    try {
      unpinSocketLb(join(BPFFS, name));
      result.unpinned.push(name);
    } catch (error) {
      result.errors.push(`pins ${name}: ${(error as Error).message}`);
    }
  }
}

async function removeTestCgroups(options: SweepOptions, result: SweepResult): Promise<void> {
  const byName = new Map<string, string[]>();
  for (const mount of cgroupMounts()) {
    let names: string[];
    try {
      names = childCgroups(mount);
    } catch (error) {
      result.errors.push(`reading ${mount}: ${(error as Error).message}`);
      continue;
    }
    for (const name of names) {
      if (!name.startsWith(TEST_CGROUP_PREFIX)) continue;
      byName.set(name, [...(byName.get(name) ?? []), join(mount, name)]);
    }
  }
  if (byName.size === 0) return;
  const busy = otherRunActive(options);
  for (const [name, dirs] of byName) {
    if (busy !== undefined && !namedForRun(name, options.runId)) {
      result.kept.push({ name, why: busy });
      continue;
    }
    const ctime = statSync(dirs[0] as string, { throwIfNoEntry: false })?.ctimeMs ?? Number.POSITIVE_INFINITY;
    const older = ctime < options.startedAt;
    if (options.dryRun) {
      result.removed.push({ name, dirs, older, pids: [...new Set(dirs.flatMap(subtree).flatMap(procsOf))] });
      continue;
    }
    try {
      result.removed.push({ name, dirs, older, pids: await removeCgroup(dirs) });
    } catch (error) {
      result.errors.push(`cgroup ${name}: ${(error as Error).message}`);
    }
  }
}

/** Kills this run's leftover processes, then removes leftover test cgroups; reports every step through `log`. */
export async function sweep(options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { killed: [], removed: [], unpinned: [], kept: [], errors: [] };
  try {
    await killMarked(options, result);
  } catch (error) {
    result.errors.push(`processes: ${(error as Error).message}`);
  }
  try {
    await removeTestCgroups(options, result);
  } catch (error) {
    result.errors.push(`cgroups: ${(error as Error).message}`);
  }
  removeTestPins(options, result);
  const { log } = options;
  const dry = options.dryRun ? ' (dry run)' : '';
  for (const p of result.killed) log(`sweep${dry}: killed pid ${p.pid} (${p.how}): ${p.command}`);
  for (const c of result.removed) {
    const killed = c.pids.length > 0 ? `, killing pids ${c.pids.join(' ')}` : '';
    const age = c.older ? ' (left by an earlier run)' : '';
    log(`sweep${dry}: removed cgroup ${c.name}${age} from ${c.dirs.length} hierarchies${killed}`);
  }
  for (const name of result.unpinned) log(`sweep${dry}: removed the fast path's pins ${BPFFS}/${name}`);
  const keptByWhy = new Map<string, string[]>();
  for (const k of result.kept) keptByWhy.set(k.why, [...(keptByWhy.get(k.why) ?? []), k.name]);
  for (const [why, names] of keptByWhy) {
    log(`sweep${dry}: kept ${names.length} cgroup(s), ${why}: ${names.join(' ')}`);
  }
  for (const e of result.errors) log(`sweep${dry}: FAILED: ${e}`);
  const swept = result.killed.length + result.removed.length + result.unpinned.length;
  if (swept + result.kept.length + result.errors.length === 0) {
    log('sweep: nothing left behind');
  }
  return result;
}
