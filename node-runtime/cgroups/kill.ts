import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { waitFor, writeControl } from './io.ts';
import type { ReplicaCgroupFiles } from './paths.ts';

export interface KillOptions {
  files: ReplicaCgroupFiles;
  /** Every pid in the cgroup, all hierarchies. */
  pids: () => number[];
  log?: Logger;
  /** Give up (and throw) after this long; a task stuck in uninterruptible sleep can hold it. */
  timeoutMs?: number;
}

function signalAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (error) {
      // ESRCH: it exited between listing and killing, which is what we want.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }
}

async function setFrozen(freeze: NonNullable<ReplicaCgroupFiles['freeze']>, frozen: boolean): Promise<void> {
  if (freeze.kind === 'v1') {
    writeControl(freeze.file, frozen ? 'FROZEN' : 'THAWED');
    if (!frozen) return;
    // FREEZING is transitional (cgroup-v1/freezer-subsystem.rst); a task in D state can keep it
    // there, in which case we kill what we listed anyway and go round again.
    await waitFor(() => readFileSync(freeze.file, 'utf8').trim() === 'FROZEN', 200);
  } else {
    writeControl(freeze.file, frozen ? '1' : '0');
    if (!frozen) return;
    const events = freeze.file.replace(/cgroup\.freeze$/, 'cgroup.events');
    await waitFor(() => /^frozen 1$/m.test(readFileSync(events, 'utf8')), 200);
  }
}

/**
 * Kills every process of a cgroup so that nothing survives, including daemons that double-forked
 * and called setsid(): they stay in the cgroup whatever their parentage.
 *
 * v2 with cgroup.kill (Linux 5.14+) kills atomically, forks included. Otherwise, as crun and
 * systemd do, freeze the cgroup so nothing can fork between listing and killing, SIGKILL every
 * listed pid, thaw so the signals are delivered, and repeat until the cgroup is empty.
 */
export async function killCgroup({ files, pids, log, timeoutMs = 10_000 }: KillOptions): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  if (pids().length === 0) return;
  if (files.kill !== undefined) {
    writeControl(files.kill, '1');
    // Membership in the v1 hierarchies is written by the child itself, so in a hybrid layout a
    // process can be in v1 only (its pid write raced with the kill); the loop below catches it.
    if (await waitFor(() => pids().length === 0, Math.min(1_000, timeoutMs))) return;
  }
  let rounds = 0;
  for (;;) {
    const before = pids();
    if (before.length === 0) return;
    if (Date.now() >= deadline) {
      throw new Error(`cgroup still holds pids ${before.join(',')} after ${timeoutMs} ms of SIGKILL rounds`);
    }
    rounds++;
    if (files.freeze !== undefined) await setFrozen(files.freeze, true);
    try {
      signalAll(pids());
    } finally {
      if (files.freeze !== undefined) await setFrozen(files.freeze, false);
    }
    await waitFor(() => pids().length === 0, 100);
    if (rounds > 1) log?.debug({ rounds, left: before.length }, 'cgroup kill needed another round');
  }
}
