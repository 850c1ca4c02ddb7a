/**
 * hostPath volumes (docs/DESIGN.md §5.1 "Volumes", §10): a path of the host, or of the node under the
 * engine's workload root. The API server's policy (deploy/policy-workloads.yaml) decides which
 * paths a namespace may mount; this check is for a clear reason when the path is not what the
 * volume says (kubelet's hostPath type checks), and for a path through a symbolic link, which the
 * native bind refuses anyway (openat2 RESOLVE_NO_SYMLINKS): the policy compared the path as
 * written, so the path mounted must be that one.
 */
import { lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { HostPathSpec } from '../supervisor/spec.ts';

/** The host path is missing, of the wrong kind, or goes through a symbolic link: the replica waits. */
export class HostPathError extends Error {
  override name = 'HostPathError';
  readonly reason = 'HostPathUnavailable';
}

/**
 * Checks (and for DirectoryOrCreate makes) `spec.path` below `root`, walking it element by element
 * without following symbolic links. Returns what it is: a directory or a file (the mount point
 * must be of the same kind). `volume` names the volume in errors.
 */
export function prepareHostPath(root: string, spec: HostPathSpec, volume: string): 'directory' | 'file' {
  const where = `volume ${volume}: hostPath ${spec.path}${root === '/' ? '' : ` (under the workload root ${root})`}`;
  const elements = spec.path.split('/').filter((e) => e !== '');
  let at = root;
  for (let i = 0; i < elements.length; i++) {
    at = path.join(at, elements[i] as string);
    const st = lstatSync(at, { throwIfNoEntry: false });
    if (st === undefined) {
      if (spec.type !== 'DirectoryOrCreate')
        throw new HostPathError(`${where} does not exist${spec.type === '' ? '' : ` (type ${spec.type})`}`);
      // The rest is missing: made as kubelet's DirectoryOrCreate does (0755, root's).
      mkdirSync(path.join(at, ...elements.slice(i + 1)), { recursive: true, mode: 0o755 });
      return 'directory';
    }
    if (st.isSymbolicLink()) {
      const inside = `/${elements.slice(0, i + 1).join('/')}`;
      throw new HostPathError(
        `${where} goes through ${inside}, a symbolic link (to ${readlinkSync(at)}); write the path it points to`,
      );
    }
    const last = i === elements.length - 1;
    if (!last && !st.isDirectory()) throw new HostPathError(`${where}: ${at} is not a directory`);
    if (!last) continue;
    if (st.isDirectory()) {
      if (spec.type === 'File') throw new HostPathError(`${where} is a directory, not a file (type File)`);
      return 'directory';
    }
    if (st.isFile()) {
      if (spec.type === 'Directory' || spec.type === 'DirectoryOrCreate')
        throw new HostPathError(`${where} is a file, not a directory (type ${spec.type})`);
      return 'file';
    }
    throw new HostPathError(`${where} is neither a directory nor a regular file`);
  }
  throw new HostPathError(`${where} is not a path below /`);
}
