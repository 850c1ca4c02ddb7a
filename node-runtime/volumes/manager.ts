/**
 * A replica's volumes on its host (docs/DESIGN.md §5.1 "Volumes"): made before its first spawn,
 * kept across process restarts and runtime restarts, removed with the replica.
 *
 * ```
 * <root>/<replica id>/            0700, the runtime's
 *   files/                        tmpfs (configMap and secret volumes; never on disk), 0700, owned
 *     <volume>/                   by the uid the replica's processes run as; one 0755 directory per
 *                                 volume, written by atomic-writer.ts; the mount read-only (so a
 *                                 replica's user namespace copies it locked), written through a
 *                                 writable clone attached nowhere (TmpfsApi.writableClone)
 *   empty/<volume>/               emptyDir: a directory (medium "") or a tmpfs of size sizeLimit
 *                                 (Memory), 0777, owned by the replica's root
 * <persistent root>/<key>/        persistent: a directory that outlives the replica (the agent's
 *                                 key is <namespace>/<instance>/<ordinal>/<volume>), 0777, owned
 *                                 by the replica's root; parents 0700, the runtime's
 * <workload root>/<path>          hostPath: the node's own, checked (host-path.ts), never removed
 * ```
 *
 * Each process attaches its mounts itself at spawn (native binds: a detached mount made by the
 * runtime, attached in the process's own mount namespace), so `<root>` may be closed to it. A
 * read-only volume whose source is on a read-only mount is cloned by the process from its own
 * copy of that mount, which the kernel locked (node-runtime/native/README.md, "Locked volumes"):
 * the `files/` tmpfs is kept read-only for that, once per replica rather than per spawn, and
 * adds no mount to the runtime's namespace (each one there is copied into every replica's).
 */
import {
  chmodSync,
  chownSync,
  closeSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import path from 'node:path';
import type { VolumeSpec, WorkloadSpec } from '../supervisor/spec.ts';
import { type FileOwner, type VolumeFile, writeAtomic } from './atomic-writer.ts';
import { prepareHostPath } from './host-path.ts';

export interface TmpfsApi {
  mountTmpfs(target: string, options: string): void;
  unmount(target: string): void;
  /** Makes the mount at target read-only (native remountReadOnly); without it files/ stays writable. */
  remountReadOnly?(target: string): void;
  /** A writable clone of the mount at source, attached nowhere, reached as /proc/self/fd/<fd>. */
  writableClone?(source: string): number;
  closeFd?(fd: number): void;
}

/** What a configMap or secret volume's tmpfs may hold per volume: two versions of a 1 MiB object, and room. */
const FILES_BYTES_PER_VOLUME = 4 * 1024 * 1024;

export interface VolumeIds {
  /** Host uid and gid the replica's processes run as: owner of the files tmpfs. */
  process: FileOwner;
  /** Host ids of the replica's root: owner of the files and of emptyDirs. */
  root: FileOwner;
}

/** The size of a replica's user namespace: persistent data is shifted between such ranges. */
const ID_RANGE = 65536;

export interface PersistentOptions {
  /** Where persistent volumes live (on disk). */
  root: string;
  /** The first host id of the user namespace ranges (EngineOptions.userNamespaces.firstHostId). */
  firstHostId: number;
}

export class VolumeManager {
  readonly #root: string;
  readonly #api: TmpfsApi;
  /** Where mount points are made: the workload root, or the runtime's own `/`. */
  readonly #workloadRoot: string;
  readonly #persistent: PersistentOptions;

  constructor(root: string, api: TmpfsApi, workloadRoot = '/', persistent?: PersistentOptions) {
    this.#root = path.resolve(root);
    this.#api = api;
    this.#workloadRoot = workloadRoot;
    this.#persistent = persistent
      ? { ...persistent, root: path.resolve(persistent.root) }
      : { root: path.join(this.#root, '..', 'persistent'), firstHostId: 2 ** 30 };
  }

  get root(): string {
    return this.#root;
  }

  get persistentRoot(): string {
    return this.#persistent.root;
  }

  /** The keys of the persistent volumes on this host: directories `depth` levels below the root. */
  persistentKeys(depth = 4): string[] {
    const out: string[] = [];
    const walk = (dir: string, rel: string[]) => {
      for (const e of readdirOrEmpty(dir)) {
        if (!e.isDirectory()) continue;
        if (rel.length + 1 === depth) out.push([...rel, e.name].join('/'));
        else walk(path.join(dir, e.name), [...rel, e.name]);
      }
    };
    walk(this.#persistent.root, []);
    return out.sort();
  }

  /** Removes a persistent volume's directory, and its parents left empty (not the root). */
  removePersistent(key: string): void {
    const dir = path.join(this.#persistent.root, key);
    if (!dir.startsWith(`${this.#persistent.root}/`))
      throw new TypeError(`persistent key ${key} leaves the root`);
    rmSync(dir, { recursive: true, force: true });
    for (let d = path.dirname(dir); d !== this.#persistent.root; d = path.dirname(d)) {
      if (readdirOrEmpty(d).length > 0) break;
      rmSync(d, { recursive: true, force: true });
    }
  }

  dir(id: string): string {
    return path.join(this.#root, id);
  }

  /**
   * The directory a volume's mounts attach (the bind source). A hostPath's is its path on the
   * node, to be resolved below the workload root (SpawnRequest.binds[].root).
   */
  source(id: string, volume: VolumeSpec): string {
    if ('hostPath' in volume) return volume.hostPath.path;
    if ('persistent' in volume) return path.join(this.#persistent.root, volume.persistent.key);
    return 'files' in volume
      ? path.join(this.dir(id), 'files', volume.name)
      : path.join(this.dir(id), 'empty', volume.name);
  }

  /**
   * Runs `write` on a writable path to the replica's files tmpfs: a clone of the read-only mount
   * attached nowhere (/proc/self/fd/<fd>), unmounted after; the mount itself without that API.
   */
  #writable<T>(id: string, write: (filesDir: string) => T): T {
    const filesDir = path.join(this.dir(id), 'files');
    const { writableClone, closeFd } = this.#api;
    if (!writableClone || !closeFd) return write(filesDir);
    const fd = writableClone(filesDir);
    try {
      return write(`/proc/self/fd/${fd}`);
    } finally {
      closeFd(fd);
    }
  }

  /**
   * Makes what the spec's volumes need and is missing (idempotent: a re-adopted replica keeps
   * its tmpfs and its emptyDir contents), and every mount point that does not exist yet.
   * `memoryBytes`: the size of a Memory emptyDir without a sizeLimit.
   */
  prepare(spec: WorkloadSpec, ids: VolumeIds, memoryBytes: number): void {
    const volumes = spec.volumes ?? [];
    if (volumes.length === 0) return;
    // Volumes that are files (a hostPath to a regular file): their mount points are files too.
    const files = new Set<string>();
    for (const v of volumes) {
      if ('hostPath' in v && prepareHostPath(this.#workloadRoot, v.hostPath, v.name) === 'file')
        files.add(v.name);
    }
    for (const v of volumes)
      if ('persistent' in v) this.#preparePersistent(this.source(spec.id, v), ids.root);
    if (volumes.every((v) => 'persistent' in v || 'hostPath' in v)) {
      this.#makeMountPoints(spec, files);
      return;
    }
    mkdirSync(this.#root, { recursive: true, mode: 0o700 });
    const dir = this.dir(spec.id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const objects = volumes.filter((v) => 'files' in v);
    if (objects.length > 0) {
      const filesDir = path.join(dir, 'files');
      mkdirSync(filesDir, { recursive: true, mode: 0o700 });
      if (!isMountPoint(filesDir)) {
        const size = objects.length * FILES_BYTES_PER_VOLUME;
        this.#api.mountTmpfs(
          filesDir,
          `size=${size},nr_inodes=${objects.length * 4096 + 16},mode=0700,uid=${ids.process.uid},gid=${ids.process.gid}`,
        );
      }
      this.#writable(spec.id, (w) => {
        for (const v of objects) mkdirSync(path.join(w, v.name), { recursive: true, mode: 0o755 });
      });
      this.#api.remountReadOnly?.(filesDir);
    }
    for (const v of volumes) {
      if (!('emptyDir' in v)) continue;
      const target = this.source(spec.id, v);
      const existed = statSync(target, { throwIfNoEntry: false }) !== undefined;
      mkdirSync(target, { recursive: true, mode: 0o777 });
      if (v.emptyDir.medium === 'memory' && !isMountPoint(target)) {
        const size = v.emptyDir.sizeLimitBytes ?? memoryBytes;
        this.#api.mountTmpfs(target, `size=${size},mode=0777,uid=${ids.root.uid},gid=${ids.root.gid}`);
      } else if (!existed) {
        chownSync(target, ids.root.uid, ids.root.gid);
        chmodSync(target, 0o777);
      }
    }
    this.#makeMountPoints(spec, files);
  }

  /** Missing mount points: directories, or empty files (0644) for the volumes in `files`. */
  #makeMountPoints(spec: WorkloadSpec, files: ReadonlySet<string>): void {
    for (const p of spec.processes) {
      for (const m of p.volumeMounts ?? []) {
        const point = path.join(this.#workloadRoot, m.mountPath);
        if (statSync(point, { throwIfNoEntry: false })) continue;
        if (files.has(m.name)) {
          mkdirSync(path.dirname(point), { recursive: true, mode: 0o755 });
          closeSync(openSync(point, 'wx', 0o644));
        } else mkdirSync(point, { recursive: true, mode: 0o755 });
      }
    }
  }

  /**
   * A persistent volume's directory: made (0777, the replica's root's, as an emptyDir) the first
   * time, and otherwise handed to this run's ids. A replica gets the lowest free user namespace
   * range at each start, so an ordinal created again may run under another range than the one
   * that wrote its data: every entry owned by an id of the old range is shifted into the new one
   * (as a chown -R of fsGroup or podman's :U would), once per change of range.
   */
  #preparePersistent(dir: string, owner: FileOwner): void {
    const root = this.#persistent.root;
    mkdirSync(root, { recursive: true, mode: 0o700 });
    // Parents are the runtime's and closed (0700), as the volume root is.
    mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 });
    const st = statSync(dir, { throwIfNoEntry: false });
    if (!st) {
      mkdirSync(dir, { mode: 0o777 });
      chownSync(dir, owner.uid, owner.gid);
      chmodSync(dir, 0o777);
      return;
    }
    const from = this.#rangeBase(st.uid);
    if (from !== owner.uid) shiftIds(dir, from, owner.uid);
  }

  /** The first id of the user namespace range `uid` belongs to (0: a replica without one). */
  #rangeBase(uid: number): number {
    const first = this.#persistent.firstHostId;
    return uid < first ? 0 : first + Math.floor((uid - first) / ID_RANGE) * ID_RANGE;
  }

  /** Writes a new version of a configMap or secret volume's files (atomic-writer.ts). */
  writeFiles(id: string, volume: VolumeSpec, files: readonly VolumeFile[], owner: FileOwner): void {
    if (!('files' in volume))
      throw new TypeError(`volume ${volume.name} of ${id} is not a configMap or secret volume`);
    this.#writable(id, (w) => writeAtomic(path.join(w, volume.name), files, owner));
  }

  /** Bytes a disk emptyDir holds (allocated blocks, as du counts them), stopping once over `limit`. */
  usage(id: string, volume: VolumeSpec, limit = Number.POSITIVE_INFINITY): number {
    return diskUsage(this.source(id, volume), limit);
  }

  /** Unmounts and removes everything of the replica's volumes. */
  remove(id: string): void {
    const dir = this.dir(id);
    if (!statSync(dir, { throwIfNoEntry: false })) return;
    const empty = path.join(dir, 'empty');
    for (const name of readdirOrEmpty(empty).filter((e) => e.isDirectory()))
      this.#api.unmount(path.join(empty, name.name));
    this.#api.unmount(path.join(dir, 'files'));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Moves every uid and gid in [from, from + ID_RANGE) of the tree at `dir` to the same offset from `to`. */
function shiftIds(dir: string, from: number, to: number): void {
  const shift = (id: number) => (id >= from && id < from + ID_RANGE ? id - from + to : id);
  const stack = [dir];
  const own = (p: string) => {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (st) lchownSync(p, shift(st.uid), shift(st.gid));
    return st;
  };
  own(dir);
  while (stack.length > 0) {
    const d = stack.pop() as string;
    for (const e of readdirOrEmpty(d)) {
      const p = path.join(d, e.name);
      if (own(p)?.isDirectory()) stack.push(p);
    }
  }
}

function readdirOrEmpty(dir: string) {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

/** A directory on another filesystem than its parent: a mount point (our tmpfs). */
function isMountPoint(dir: string): boolean {
  const st = statSync(dir, { throwIfNoEntry: false });
  const parent = statSync(path.dirname(dir), { throwIfNoEntry: false });
  return st !== undefined && parent !== undefined && st.dev !== parent.dev;
}

function diskUsage(dir: string, limit: number): number {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0 && total <= limit) {
    const d = stack.pop() as string;
    for (const e of readdirOrEmpty(d)) {
      const p = path.join(d, e.name);
      const st = lstatSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      total += st.blocks * 512;
      if (st.isDirectory()) stack.push(p);
    }
  }
  return total;
}
