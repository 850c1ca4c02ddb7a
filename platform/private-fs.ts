// Directories and files that only their owner may read: data dirs, credentials, logs of the
// control plane. A directory that exists looser is tightened (mkdir's mode applies only when it
// creates), and files are opened so that a symlink planted in their place is refused
// (O_NOFOLLOW), and made new only by exclusive create (O_EXCL), never by following a name.
// (libuv adds O_CLOEXEC to every open.)
import {
  chmodSync,
  closeSync,
  constants,
  lstatSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';

/** Creates `dir` (and its parents) and makes it mode 0700, also when it existed looser. */
export function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = lstatSync(dir);
  if (!stat.isDirectory()) throw new Error(`${dir} is not a directory (a symlink or a file is in its place)`);
  if ((stat.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

/**
 * Opens `path` for appending without following a symlink at its place, created 0600 when missing.
 * Returns the file descriptor.
 */
export function openPrivateAppend(path: string): number {
  return openSync(
    path,
    constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
    0o600,
  );
}

/**
 * Writes `data` to `path` through a temporary file made by exclusive create (O_EXCL, which also
 * refuses a symlink) with mode 0600, then rename(2): readers see the old file or the whole new one.
 */
export function writePrivateFile(path: string, data: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  const fd = openSync(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
