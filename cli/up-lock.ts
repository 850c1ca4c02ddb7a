// One `orrery up` per data dir. DATA_DIR/up.pid names the `up` process of the run and the
// processes it started (control plane, operator, host agents), each by pid and start time, so a
// reused pid is never taken for a live run. The file is taken before anything else starts and
// removed by a clean stop; one left by a killed run is stale once its `up` is gone, and the next
// run waits for that run's children, which stop by themselves when `up` goes away, before it
// starts its own on the same state.
import { linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { privateDir, writePrivateFile } from '../platform/private-fs.ts';
import { liveStartTime } from '../platform/proc.ts';

/** The data dir is in use by a running `orrery up`: the message is the one line the user sees. */
export class DataDirInUse extends Error {
  override readonly name = 'DataDirInUse';
}

interface ProcessRef {
  pid: number;
  /** /proc/PID/stat field 22 (starttime, clock ticks since boot): the pid's identity over reuse. */
  startTime: string;
}

interface RunRecord extends ProcessRef {
  startedAt: string;
  children: (ProcessRef & { name: string })[];
}

export interface DataDirLock {
  /** Records a process started for this run (or restarted: the same name replaces the old pid). */
  recordChild(name: string, pid: number): void;
  /** Removes the file: the run stopped cleanly. */
  release(): void;
}

function isRunning(ref: ProcessRef): boolean {
  return liveStartTime(ref.pid) === ref.startTime;
}

function readRecord(path: string): RunRecord | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as RunRecord;
  } catch {
    return undefined;
  }
}

function writeAtomic(path: string, record: RunRecord): void {
  writePrivateFile(path, `${JSON.stringify(record)}\n`);
}

/**
 * Takes DATA_DIR/up.pid for this process, or throws DataDirInUse when a live `up` holds it.
 * A stale file's leftover children get `leftoverGraceMs` to exit before that is an error too.
 */
export async function lockDataDir(
  dataDir: string,
  log: (message: string) => void,
  leftoverGraceMs = 40_000,
): Promise<DataDirLock> {
  // The data dir holds the control plane's keys and the hosts' credentials: its owner's only.
  privateDir(dataDir);
  const path = join(dataDir, 'up.pid');
  const self = liveStartTime(process.pid);
  if (self === undefined) throw new Error(`cannot read /proc/${process.pid}/stat`);
  const record: RunRecord = {
    pid: process.pid,
    startTime: self,
    startedAt: new Date().toISOString(),
    children: [],
  };
  for (;;) {
    // link(2) publishes the complete record or fails with EEXIST: no reader sees it half-written.
    const tmp = `${path}.${process.pid}.tmp`;
    rmSync(tmp, { force: true });
    writeFileSync(tmp, `${JSON.stringify(record)}\n`, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(tmp, path);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      rmSync(tmp, { force: true });
    }
    const held = readRecord(path);
    if (held && isRunning(held)) {
      throw new DataDirInUse(
        `Orrery already runs on ${dataDir} (orrery up, pid ${held.pid}, since ${held.startedAt}); stop it first (Ctrl-C in its terminal, or kill -INT ${held.pid}), or start another with --data-dir <dir>`,
      );
    }
    if (held) await untilLeftoversExit(held, dataDir, log, leftoverGraceMs);
    rmSync(path, { force: true });
  }
  return {
    recordChild(name, pid) {
      const startTime = liveStartTime(pid);
      if (startTime === undefined) return;
      record.children = [...record.children.filter((c) => c.name !== name), { name, pid, startTime }];
      writeAtomic(path, record);
    },
    release() {
      rmSync(path, { force: true });
    },
  };
}

/** The children of a killed run stop by themselves (parent death); waits until they have. */
async function untilLeftoversExit(
  held: RunRecord,
  dataDir: string,
  log: (message: string) => void,
  graceMs: number,
): Promise<void> {
  const running = () => held.children.filter(isRunning);
  if (running().length === 0) return;
  const names = (refs: RunRecord['children']) => refs.map((c) => `${c.name} pid ${c.pid}`).join(', ');
  log(`waiting for the processes of an earlier run on ${dataDir} to exit: ${names(running())}`);
  const deadline = performance.now() + graceMs;
  while (running().length > 0) {
    if (performance.now() > deadline) {
      throw new DataDirInUse(
        `processes of an earlier orrery up on ${dataDir} still run ${graceMs / 1000} s after it died (${names(running())}); stop them, or start another with --data-dir <dir>`,
      );
    }
    await sleep(100);
  }
}
