/**
 * Engine state on disk: one JSON file per replica under `<stateDir>/replicas/`, so a runtime
 * killed at any instant leaves either the old or the new record. Together with the cgroup tree it
 * is the truth a restarted runtime re-adopts from.
 *
 * A record is created atomically (temp file + rename, https://lwn.net/Articles/457667/) and then
 * updated in place: one pwrite of the whole record at offset 0, padded with spaces to the old
 * length (JSON ignores trailing whitespace), when both fit in one page. The kernel copies a write
 * into the page cache page by page and checks for a fatal signal only between pages, so a
 * one-page write is never half done when the runtime is killed. In place keeps the inode:
 * replacing the file frees one and allocates one per update, and ext4 without a journal
 * allocates past recently freed inodes, reading each one's inode table block. A machine crash can
 * tear an in-place write on disk; such a record reads as absent, which is the truth after a
 * reboot (no recorded process survives one). Bigger records go through temp file + rename.
 *
 * Writes for one replica are serialized and coalesced: while one write is in flight, later
 * saves only mark the replica dirty and the newest record is written once it finishes. Callers
 * never wait on the disk on the restart path.
 */
import {
  closeSync,
  constants,
  fstatSync,
  fsync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

export interface StoredReplica<Spec = unknown, Proc = unknown> {
  version: 1;
  spec: Spec;
  createdAt: string;
  ports: Record<string, Record<string, number>>;
  processes: Proc[];
}

interface Pending {
  inFlight: Promise<void>;
  next: (() => StoredReplica) | undefined;
  /** Some coalesced save asked for fsync. */
  nextDurable: boolean;
  removed: boolean;
}

export class StateStore {
  readonly dir: string;
  readonly #pending = new Map<string, Pending>();

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'replicas');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  fileOf(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /**
   * Schedule a write of the record produced by `snapshot` (called when the write actually starts,
   * so coalesced saves write the newest facts). Resolves when a write covering this call is done.
   * `durable: false` skips the fsync: the record then survives a crash of the runtime (the page
   * cache does) but not of the machine; used for the record written just before a first spawn.
   */
  save(id: string, snapshot: () => StoredReplica, options: { durable?: boolean } = {}): Promise<void> {
    const durable = options.durable !== false;
    const p = this.#pending.get(id);
    if (p) {
      p.removed = false;
      p.next = snapshot;
      p.nextDurable ||= durable;
      return p.inFlight.then(() => this.#pending.get(id)?.inFlight);
    }
    const entry: Pending = {
      inFlight: Promise.resolve(),
      next: undefined,
      nextDurable: false,
      removed: false,
    };
    this.#pending.set(id, entry);
    entry.inFlight = this.#drain(id, entry, snapshot, durable);
    return entry.inFlight;
  }

  async #drain(id: string, entry: Pending, first: () => StoredReplica, firstDurable: boolean): Promise<void> {
    let snapshot: (() => StoredReplica) | undefined = first;
    let durable = firstDurable;
    try {
      while (snapshot && !entry.removed) {
        entry.next = undefined;
        entry.nextDurable = false;
        await writeRecord(this.fileOf(id), `${JSON.stringify(snapshot())}\n`, durable);
        snapshot = entry.next;
        durable = entry.nextDurable;
      }
    } finally {
      this.#pending.delete(id);
    }
  }

  /** Remove a replica's record, after any in-flight write (so the write cannot resurrect it). */
  async remove(id: string): Promise<void> {
    const p = this.#pending.get(id);
    if (p) {
      p.removed = true;
      await p.inFlight.catch(() => {});
    }
    await rm(this.fileOf(id), { force: true });
  }

  /** Wait for every queued write (used by close()). */
  async flush(): Promise<void> {
    await Promise.all([...this.#pending.values()].map((p) => p.inFlight.catch(() => {})));
  }

  /**
   * Synchronous on purpose: it runs only while a runtime starts, where a thousand small reads
   * through the libuv threadpool (open, fstat, read, close each) cost ten times more than direct ones.
   * A record that does not parse (torn by a machine crash, see above) reads as absent.
   */
  load(id: string): StoredReplica | undefined {
    let text: string;
    try {
      text = readFileSync(this.fileOf(id), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`reading replica state ${this.fileOf(id)}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return JSON.parse(text) as StoredReplica;
    } catch {
      return undefined;
    }
  }

  /** Ids of every replica with a record; leftover temp files of an interrupted write are ignored. */
  async ids(): Promise<string[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -'.json'.length));
  }
}

const fsyncFd = promisify(fsync);

/** Records up to this size are updated in place (see the top of this file). */
const PAGE = 4096;

/**
 * Updates `file` in place when it exists and the old and new contents both fit in one page; else
 * creates or replaces it with writeAtomic.
 */
async function writeRecord(file: string, content: string, durable: boolean): Promise<void> {
  const bytes = Buffer.from(content);
  if (bytes.length <= PAGE) {
    let fd: number | undefined;
    try {
      fd = openSync(file, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (fd !== undefined) {
      try {
        const size = fstatSync(fd).size;
        if (size <= PAGE) {
          const page =
            size > bytes.length ? Buffer.concat([bytes, Buffer.alloc(size - bytes.length, ' ')]) : bytes;
          const written = writeSync(fd, page, 0, page.length, 0);
          if (written !== page.length)
            throw new Error(`short write to ${file}: ${written} of ${page.length} bytes`);
          if (durable) await fsyncFd(fd);
          return;
        }
      } finally {
        closeSync(fd);
      }
    }
  }
  await writeAtomic(file, content, durable);
}

const EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * A new file, 0600, by exclusive create: never an existing file or one a symlink in its place
 * points to. A temporary file left by a crash of a process with the same pid is ours (the state
 * dir is 0700) and is removed first.
 */
function openExclusive(tmp: string): number {
  try {
    return openSync(tmp, EXCLUSIVE, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    unlinkSync(tmp);
    return openSync(tmp, EXCLUSIVE, 0o600);
  }
}

/**
 * Temp file + (fsync) + rename. The small syscalls are made directly: a record is a few hundred
 * bytes, and each threadpool round trip (open, write, close, rename) costs the event loop a
 * wake-up and a promise chain, several times the syscall itself (with a thousand replicas
 * starting at once the agent's main thread spent ~0.5 ms per start on them). Only the fsync,
 * which waits for the disk, runs in the threadpool.
 */
async function writeAtomic(file: string, content: string, durable = true): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openExclusive(tmp);
  try {
    writeFileSync(fd, content);
    if (durable) await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
  // No fsync of the directory: the rename is atomic as it is, and only a machine crash could lose
  // it, after which every recorded process is gone anyway (and the start-time check rejects stale
  // pids). Syncing the data before the rename is what matters: it keeps a crash from exposing an
  // empty file under the final name (the ext4 rename/delalloc problem).
  renameSync(tmp, file);
}
