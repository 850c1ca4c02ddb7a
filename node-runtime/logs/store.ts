import {
  closeSync,
  constants,
  existsSync,
  type FSWatcher,
  openSync,
  renameSync,
  statSync,
  unlinkSync,
  watch,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { privateDir } from '../../platform/private-fs.ts';
import { assertSafeName } from '../cgroups/names.ts';
import { runBase, runFiles } from './files.ts';
import { followRun } from './follow.ts';
import { copyTruncate, type Rotation } from './rotate.ts';
import { liveSize, readRun, tailLines, tailStart } from './tail.ts';

const { O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW } = constants;

export interface LogStoreOptions {
  /** Directory holding `<replica>/<process>.log`. */
  root: string;
  /** Size at which the live file is rotated; default 10 MiB (the kubelet's containerLogMaxSize). */
  maxBytes?: number;
  /** Files kept per run, the live one included (live + .1 … .4 for 5); default 5 (the kubelet's containerLogMaxFiles). */
  maxFiles?: number;
  /** Rotate live files as they are written (inotify); default true. False leaves rotation to rotateIfNeeded() calls. */
  rotateOnWrite?: boolean;
  /** Called after each rotation (metrics, logs); errors of a rotation the watcher started go to onError. */
  onRotated?: (replicaId: string, processName: string, rotation: Rotation) => void;
  onError?: (replicaId: string, processName: string, error: Error) => void;
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
  /** What to send between two runs (followRun's onNewRun). */
  onNewRun?: () => Promise<string | undefined>;
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

/** How long after a change to a replica's logs their sizes are checked (README.md, "Bounds"). */
const CHECK_DELAY_MS = 10;

/** The live files of one replica directory that the store keeps under the cap. */
interface WatchedDir {
  dir: string;
  /** Set while armed: the next change disarms it and schedules a check. */
  watcher: FSWatcher | undefined;
  /** Process name → live file. */
  live: Map<string, string>;
  timer: NodeJS.Timeout | undefined;
  /** Rotations in progress; the check after them re-arms. */
  checking: boolean;
}

/**
 * Log files of every process the runtime runs: one file per process, which the child opens with
 * O_APPEND for both stdout and stderr, so the runtime never holds a pipe to a workload and its
 * crash cannot SIGPIPE one. This class names, rotates, reads and removes those files.
 *
 * Rotation follows the writes: a change in a replica directory (inotify, fs.watch) has its live
 * files stat()ed 10 ms later, and one at `maxBytes` rotated there and then (README.md, "Bounds").
 */
export class LogStore {
  readonly root: string;
  readonly maxBytes: number;
  readonly maxFiles: number;
  readonly #dirsMade = new Set<string>();
  readonly #watched = new Map<string, WatchedDir>();
  /** Rotation in progress per live file: the watcher and rotateIfNeeded() never rotate one file twice at once. */
  readonly #rotating = new Map<string, Promise<boolean>>();
  readonly #onRotated: LogStoreOptions['onRotated'];
  readonly #onError: LogStoreOptions['onError'];
  readonly #rotateOnWrite: boolean;
  #closed = false;

  constructor(options: LogStoreOptions) {
    if (typeof options?.root !== 'string' || options.root === '') {
      throw new TypeError(`options.root must be a non-empty directory path, got ${typeof options?.root}`);
    }
    assertCount(options.maxBytes, 'options.maxBytes', 1);
    assertCount(options.maxFiles, 'options.maxFiles', 1);
    this.root = options.root;
    this.maxBytes = options.maxBytes ?? 10 * 1024 * 1024;
    this.maxFiles = options.maxFiles ?? 5;
    this.#onRotated = options.onRotated;
    this.#onError = options.onError;
    this.#rotateOnWrite = options.rotateOnWrite !== false;
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
   * replacing the one before, and an empty live file is created (0600, O_EXCL: never through a
   * symlink). Returns the path for the child. The file is watched from then on.
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
      if (!this.#dirsMade.has(this.root)) {
        privateDir(this.root);
        this.#dirsMade.add(this.root);
      }
      privateDir(dir);
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
    const flags = O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW;
    let fd: number;
    try {
      fd = openSync(live, flags, 0o600);
    } catch (error) {
      // The rename above moved any file away; what is left at the name is not ours (a symlink).
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      unlinkSync(live);
      fd = openSync(live, flags, 0o600);
    }
    closeSync(fd);
    this.watch(replicaId, processName);
    return live;
  }

  /**
   * Keeps a process's live file under `maxBytes` as it is written (prepareRun() does it for new
   * runs; the engine calls it for the processes it re-adopts). Idempotent.
   */
  watch(replicaId: string, processName: string): void {
    if (this.#closed || !this.#rotateOnWrite) return;
    const dir = join(this.root, replicaId);
    let entry = this.#watched.get(dir);
    if (entry === undefined) {
      entry = { dir, watcher: undefined, live: new Map(), timer: undefined, checking: false };
      this.#watched.set(dir, entry);
    }
    entry.live.set(processName, this.#base(replicaId, processName));
    this.#check(replicaId, entry);
  }

  /**
   * Armed: the directory is watched and the first change disarms it (the watch is removed, so a
   * process writing a line per write(2) costs no event per line) and schedules a check
   * `CHECK_DELAY_MS` later. The check re-arms first, then stats every live file of the replica and
   * rotates those at the size; a rotation re-checks when it ends. Idle files cost nothing.
   */
  #arm(replicaId: string, entry: WatchedDir): void {
    if (entry.watcher !== undefined || this.#watched.get(entry.dir) !== entry) return;
    try {
      entry.watcher = watch(entry.dir, { persistent: false });
    } catch (error) {
      // ENOENT: removed, removeReplica() follows. Anything else (ENOSPC: past
      // fs.inotify.max_user_watches) leaves this replica to the engine's periodic pass; the
      // process still starts.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        const processName = entry.live.keys().next().value ?? '';
        this.#onError?.(
          replicaId,
          processName,
          new Error(`cannot watch ${entry.dir}: ${code}`, { cause: error }),
        );
      }
      return;
    }
    const disarm = () => {
      entry.watcher?.close();
      entry.watcher = undefined;
      entry.timer ??= setTimeout(() => {
        entry.timer = undefined;
        this.#check(replicaId, entry);
      }, CHECK_DELAY_MS);
    };
    entry.watcher.on('change', disarm);
    entry.watcher.on('error', disarm); // inotify overflow: check everything anyway
  }

  #check(replicaId: string, entry: WatchedDir): void {
    if (this.#watched.get(entry.dir) !== entry || entry.checking) return;
    this.#arm(replicaId, entry);
    const due: Promise<unknown>[] = [];
    for (const [processName, live] of entry.live) {
      const size = statSync(live, { throwIfNoEntry: false })?.size ?? 0;
      if (size < this.maxBytes) continue;
      due.push(
        this.rotateIfNeeded(replicaId, processName).catch((error: Error) =>
          this.#onError?.(replicaId, processName, error),
        ),
      );
    }
    if (due.length === 0) return;
    entry.checking = true;
    void Promise.all(due).finally(() => {
      entry.checking = false;
      this.#check(replicaId, entry);
    });
  }

  /** Rotates the live file (bounded copytruncate) once it reaches maxBytes; true when it rotated. */
  async rotateIfNeeded(replicaId: string, processName: string): Promise<boolean> {
    const live = this.#base(replicaId, processName);
    const running = this.#rotating.get(live);
    if (running) return running;
    const rotation = (async () => {
      const size = statSync(live, { throwIfNoEntry: false })?.size;
      if (size === undefined || size < this.maxBytes) return false;
      const result = await copyTruncate(runFiles(live, this.maxFiles), this.maxBytes);
      this.#onRotated?.(replicaId, processName, result);
      return true;
    })().finally(() => this.#rotating.delete(live));
    this.#rotating.set(live, rotation);
    return rotation;
  }

  /** The last `lines` lines of the current (or previous) run, across its rotated files, as one string. */
  tail(replicaId: string, processName: string, options: TailOptions = {}): Promise<string> {
    assertCount(options.lines, 'options.lines', 0);
    const base = this.#base(replicaId, processName, options.previous === true);
    return tailLines(runFiles(base, this.maxFiles), options.lines);
  }

  /**
   * The same as tail(), streamed: blocks of at most 64 KiB, read as they are asked for, so a read
   * costs one block of memory whatever the run's size.
   */
  async *read(replicaId: string, processName: string, options: TailOptions = {}): AsyncGenerator<Buffer> {
    assertCount(options.lines, 'options.lines', 0);
    const files = runFiles(this.#base(replicaId, processName, options.previous === true), this.maxFiles);
    const end = await liveSize(files);
    yield* readRun(files, await tailStart(files, options.lines, end), end);
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
    if (options.onNewRun) follow.onNewRun = options.onNewRun;
    return followRun(follow);
  }

  /** Deletes every log of a replica. */
  async removeReplica(replicaId: string): Promise<void> {
    assertSafeName(replicaId, 'replicaId');
    const dir = join(this.root, replicaId);
    this.#dirsMade.delete(dir);
    const entry = this.#watched.get(dir);
    this.#watched.delete(dir);
    entry?.watcher?.close();
    clearTimeout(entry?.timer);
    await rm(dir, { recursive: true, force: true });
  }

  /** Stops watching (the files stay); waits for rotations in progress. */
  async close(): Promise<void> {
    this.#closed = true;
    const entries = [...this.#watched.values()];
    this.#watched.clear();
    for (const { watcher, timer } of entries) {
      watcher?.close();
      clearTimeout(timer);
    }
    await Promise.all([...this.#rotating.values()].map((r) => r.catch(() => false)));
  }
}
