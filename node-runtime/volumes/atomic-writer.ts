/**
 * Files of a configMap or secret volume, written as the kubelet's AtomicWriter writes them
 * (pkg/volume/util/atomic_writer.go): every version in a directory of its own, `..<timestamp>`,
 * `..data` a symlink to the current one, swapped by rename(2), and each top-level name a symlink
 * `name -> ..data/name`. A reader sees the old set or the new set, never a mix, and a file's
 * content changes in place for a process that opens it again.
 *
 * Directories belong to the runtime (host root, mode 0755), files to the replica's root (its
 * mapped uid 0, the kubelet's 0:0), so even a replica that remounts its view read-write (root in
 * its user namespace may) can change no entry: nothing here follows a name the replica could plant.
 */
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

export interface VolumeFile {
  /** Relative path inside the volume (the item's path, or the key). */
  path: string;
  data: Buffer;
  /** Permission bits, 0 to 0o777. */
  mode: number;
}

/** The owner of the files: the replica's root on the host. */
export interface FileOwner {
  uid: number;
  gid: number;
}

const DATA = '..data';
const DATA_TMP = '..data_tmp';

/**
 * Checks the set of files (the CRD's rules, again, for a hand-written Replica) and returns the
 * top-level names that get a symlink. Throws naming the path that is invalid or that collides
 * (a file at `a` and another at `a/b`).
 */
export function planFiles(files: readonly VolumeFile[]): string[] {
  const seen = new Set<string>();
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    if (
      f.path === '' ||
      f.path.startsWith('/') ||
      f.path.startsWith('..') ||
      parts.some((p) => p === '' || p === '.' || p === '..')
    ) {
      throw new TypeError(
        `volume file path must be relative, without empty, '.' or '..' elements and not starting with '..', got "${f.path}"`,
      );
    }
    if (!Number.isInteger(f.mode) || f.mode < 0 || f.mode > 0o777) {
      throw new TypeError(`volume file ${f.path}: mode must be 0 to 0777, got ${f.mode}`);
    }
    if (seen.has(f.path) || dirs.has(f.path))
      throw new TypeError(`volume file path "${f.path}" is used twice`);
    seen.add(f.path);
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (seen.has(dir)) throw new TypeError(`volume file path "${f.path}" is below the file "${dir}"`);
      dirs.add(dir);
    }
  }
  return [...new Set(files.map((f) => f.path.split('/')[0] as string))].sort();
}

/**
 * Writes a new version of the volume at `dir` (which exists) and makes it current atomically,
 * then removes the versions before it. Returns the new version's directory name.
 */
export function writeAtomic(
  dir: string,
  files: readonly VolumeFile[],
  owner: FileOwner,
  now = new Date(),
): string {
  const names = planFiles(files);
  const stamp = now.toISOString().replace(/[-:]/g, '_').replace('T', '_').replace('Z', '');
  const version = `..${stamp}_${process.hrtime.bigint() % 1000000n}`;
  const versionDir = path.join(dir, version);
  mkdirSync(versionDir, { mode: 0o755 });
  for (const f of files) {
    const target = path.join(versionDir, f.path);
    mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
    // wx: a new file, never through a name that exists; then the owner and the exact mode (umask).
    writeFileSync(target, f.data, { flag: 'wx', mode: 0o600 });
    chownSync(target, owner.uid, owner.gid);
    chmodSync(target, f.mode);
  }
  const tmp = path.join(dir, DATA_TMP);
  rmSync(tmp, { force: true });
  symlinkSync(version, tmp);
  renameSync(tmp, path.join(dir, DATA));
  // The user-visible names: new ones point into ..data, names no longer in the set go.
  const wanted = new Set(names);
  for (const entry of readdirSync(dir)) {
    if (entry.startsWith('..')) continue;
    if (!wanted.has(entry)) unlinkSync(path.join(dir, entry));
  }
  for (const name of names) {
    const link = path.join(dir, name);
    const existing = lstatSync(link, { throwIfNoEntry: false });
    if (existing?.isSymbolicLink() && readlinkSync(link) === `${DATA}/${name}`) continue;
    if (existing) rmSync(link, { force: true });
    symlinkSync(`${DATA}/${name}`, link);
  }
  for (const entry of readdirSync(dir)) {
    if (entry.startsWith('..') && entry !== DATA && entry !== version) {
      rmSync(path.join(dir, entry), { recursive: true, force: true });
    }
  }
  return version;
}
