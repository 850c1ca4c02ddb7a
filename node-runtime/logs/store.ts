import { closeSync, existsSync, mkdirSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { assertSafeName } from '../cgroups/names.ts';
import { runBase, runFiles } from './files.ts';
import { followRun } from './follow.ts';
import { copyTruncate } from './rotate.ts';
import { tailLines } from './tail.ts';

export interface LogStoreOptions {
  /** Directory holding `<replica>/<process>.log`. */
  root: string;
  /** Size at which rotateIfNeeded() rotates the live file; default 10 MiB (the kubelet's containerLogMaxSize). */
  maxBytes?: number;
  /** Files kept per run, the live one included (live + .1 + .2 for 3); default 3. */
  maxFiles?: number;
}

export interface TailOptions {
  /** Last N lines; all lines when omitted. */
  lines?: number;
  /** The run before the current one (`kubectl logs --previous`). */
  previous?: boolean;
}

export interface FollowLogOptions {
  /** Lines of history sent first; the whole current run when omitted. */
  lines?: number;
  signal: AbortSignal;
}

function assertCount(value: unknown, name: string, min: number): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min)) {
    throw new TypeError(`${name} must be an integer >= ${min}, got ${typeof value} ${String(value)}`);
  }
}

function unlinkIfExistsSync(file: string): void {
  try {
    unlinkSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

function renameIfExistsSync(from: string, to: string): boolean {
  try {
    renameSync(from, to);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/**
 * Log files of every process the runtime runs: one file per process, which the child opens with
 * O_APPEND for both stdout and stderr, so the runtime never holds a pipe to a workload and its
 * crash cannot SIGPIPE one. This class only names, rotates, reads and removes those files.
 */
export class LogStore {
  readonly root: string;
  readonly maxBytes: number;
  readonly maxFiles: number;
  readonly #dirsMade = new Set<string>();

  constructor(options: LogStoreOptions) {
    if (typeof options?.root !== 'string' || options.root === '') {
      throw new TypeError(`options.root must be a non-empty directory path, got ${typeof options?.root}`);
    }
    assertCount(options.maxBytes, 'options.maxBytes', 1);
    assertCount(options.maxFiles, 'options.maxFiles', 1);
    this.root = options.root;
    this.maxBytes = options.maxBytes ?? 10 * 1024 * 1024;
    this.maxFiles = options.maxFiles ?? 3;
  }

  #base(replicaId: string, processName: string, previous = false): string {
    assertSafeName(replicaId, 'replicaId');
    assertSafeName(processName, 'processName');
    return runBase(this.root, replicaId, processName, previous);
  }

  /** `<root>/<replica>/<process>.log`: the file the child appends to. */
  pathFor(replicaId: string, processName: string): string {
    return this.#base(replicaId, processName);
  }

  /**
   * Before each (re)start: the current run (with its rotated files) becomes the previous run,
   * replacing the one before, and an empty live file is created. Returns the path for the child.
   *
   * Synchronous syscalls on purpose: this sits on the restart path, where each takes microseconds
   * on a local filesystem and a thread-pool round trip per call would cost more than all of them
   * and queue behind state-file fsyncs (README.md, "Runs").
   */
  prepareRun(replicaId: string, processName: string): string {
    const live = this.#base(replicaId, processName);
    const previous = this.#base(replicaId, processName, true);
    const dir = join(this.root, replicaId);
    if (!this.#dirsMade.has(dir)) {
      mkdirSync(dir, { recursive: true });
      this.#dirsMade.add(dir);
    }
    const liveFiles = runFiles(live, this.maxFiles);
    const previousFiles = runFiles(previous, this.maxFiles);
    if (renameIfExistsSync(live, previous)) {
      for (let i = 1; i < liveFiles.length; i++) {
        const target = previousFiles[i] as string;
        // existsSync first: a thrown ENOENT costs more than the stat (these files are usually absent).
        if (existsSync(liveFiles[i] as string)) renameSync(liveFiles[i] as string, target);
        else if (existsSync(target)) unlinkIfExistsSync(target);
      }
    }
    // Created here so a follower can open it before the child's first write.
    closeSync(openSync(live, 'a'));
    return live;
  }

  /** Rotates the live file by copytruncate once it reaches maxBytes; true when it rotated. */
  async rotateIfNeeded(replicaId: string, processName: string): Promise<boolean> {
    const live = this.#base(replicaId, processName);
    let size: number;
    try {
      size = (await stat(live)).size;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
    if (size < this.maxBytes) return false;
    await copyTruncate(runFiles(live, this.maxFiles));
    return true;
  }

  /** The last `lines` lines of the current (or previous) run, across its rotated files. */
  tail(replicaId: string, processName: string, options: TailOptions = {}): Promise<string> {
    assertCount(options.lines, 'options.lines', 0);
    const base = this.#base(replicaId, processName, options.previous === true);
    return tailLines(runFiles(base, this.maxFiles), options.lines);
  }

  /** History (`lines`, or the whole run), then new data as it is appended, until `signal` aborts. */
  follow(replicaId: string, processName: string, options: FollowLogOptions): AsyncIterable<string> {
    assertCount(options.lines, 'options.lines', 0);
    if (!(options.signal instanceof AbortSignal)) {
      throw new TypeError(`options.signal must be an AbortSignal, got ${typeof options.signal}`);
    }
    const files = runFiles(this.#base(replicaId, processName), this.maxFiles);
    const follow: Parameters<typeof followRun>[0] = { files, signal: options.signal };
    if (options.lines !== undefined) follow.lines = options.lines;
    return followRun(follow);
  }

  /** Deletes every log of a replica. */
  async removeReplica(replicaId: string): Promise<void> {
    assertSafeName(replicaId, 'replicaId');
    const dir = join(this.root, replicaId);
    this.#dirsMade.delete(dir);
    await rm(dir, { recursive: true, force: true });
  }
}
