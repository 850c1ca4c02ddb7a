// The addon's bpf(2) calls (src/bpf.c, src/js_bpf.c) for the kernel fast path, node-runtime/bpf/.
// Each is one system call of microseconds, so they are synchronous. Kernel failures throw
// BpfError with the errno's name and the step; the caller validates what it passes.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { packagePath } from '../../platform/package.ts';

export type BpfAttachType = 'connect4' | 'connect6' | 'getpeername4' | 'getpeername6' | 'bind4' | 'bind6';

export interface BpfProgInfo {
  id: number;
  /** The program's name as the kernel keeps it: its first 15 characters. */
  name: string;
  /** Counted only while bpf stats are enabled (`enableBpfStats`). */
  runTimeNs: number;
  runCnt: number;
}

export interface BpfMapInfo {
  id: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

interface BpfBinding {
  bpfObjGet(path: string): number;
  bpfMapUpdate(fd: number, key: Buffer, value: Buffer): number;
  bpfMapLookup(fd: number, key: Buffer, value: Buffer): number;
  bpfMapDelete(fd: number, key: Buffer): number;
  bpfMapNextKey(fd: number, key: Buffer | null, nextKey: Buffer): number;
  bpfProgAttach(cgroupDir: string, progFd: number, type: BpfAttachType): number;
  bpfProgDetach(cgroupDir: string, progFd: number, type: BpfAttachType): number;
  bpfProgQuery(cgroupDir: string, type: BpfAttachType): number[] | number;
  bpfProgInfo(fd: number): BpfProgInfo | number;
  bpfMapInfo(fd: number): BpfMapInfo | number;
  bpfProgGetFdById(id: number): number;
  bpfEnableStats(): number;
  closeFd(fd: number): number;
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

export class BpfError extends Error {
  code: string;
  errno: number;
  step: string;

  constructor(errno: number, step: string, subject?: string) {
    const code = errnoNames.get(errno) ?? `errno ${errno}`;
    super(`bpf: ${code} at ${step}${subject ? ` ${subject}` : ''}`);
    this.name = 'BpfError';
    this.code = code;
    this.errno = errno;
    this.step = step;
  }
}

let binding: BpfBinding | undefined;

/** The addon, loaded on first use (the same module object native/index.ts loads). */
function native(): BpfBinding {
  if (binding) return binding;
  const file = packagePath('node-runtime', 'native', 'build', 'Release', 'orrery_native.node');
  if (!existsSync(file)) throw new Error(`the native addon is not built (${file} is missing)`);
  binding = createRequire(import.meta.url)(file) as BpfBinding;
  return binding;
}

function check(rc: number, step: string, subject?: string): number {
  if (rc < 0) throw new BpfError(-rc, step, subject);
  return rc;
}

/** An answer that is an object, or -errno. */
function checkObject<T>(r: T | number, step: string, subject?: string): T {
  if (typeof r === 'number') throw new BpfError(-r, step, subject);
  return r;
}

/** An fd for a pinned program or map (BPF_OBJ_GET); close it with `closeBpfFd`. */
export function bpfObjGet(path: string): number {
  return check(native().bpfObjGet(path), 'obj_get', path);
}

export function closeBpfFd(fd: number): void {
  native().closeFd(fd);
}

export function bpfMapUpdate(fd: number, key: Buffer, value: Buffer): void {
  check(native().bpfMapUpdate(fd, key, value), 'map_update');
}

/** Fills `value`; false when the key is absent. */
export function bpfMapLookup(fd: number, key: Buffer, value: Buffer): boolean {
  const rc = native().bpfMapLookup(fd, key, value);
  if (rc === -constants.errno.ENOENT) return false;
  check(rc, 'map_lookup');
  return true;
}

/** False when the key was absent. */
export function bpfMapDelete(fd: number, key: Buffer): boolean {
  const rc = native().bpfMapDelete(fd, key);
  if (rc === -constants.errno.ENOENT) return false;
  check(rc, 'map_delete');
  return true;
}

/**
 * The keys of a map (BPF_MAP_GET_NEXT_KEY), each `keySize` bytes, at most `maxEntries` (a hash
 * map's walk starts over when the key it stands on is deleted meanwhile).
 */
export function bpfMapKeys(fd: number, keySize: number, maxEntries: number): Buffer[] {
  const keys: Buffer[] = [];
  let key: Buffer | null = null;
  while (keys.length < maxEntries) {
    const next = Buffer.alloc(keySize);
    const rc = native().bpfMapNextKey(fd, key, next);
    if (rc === -constants.errno.ENOENT) return keys;
    check(rc, 'map_get_next_key');
    keys.push(next);
    key = next;
  }
  return keys;
}

/** BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI; lasts until detached or the cgroup is removed. */
export function bpfProgAttach(cgroupDir: string, progFd: number, type: BpfAttachType): void {
  check(native().bpfProgAttach(cgroupDir, progFd, type), `prog_attach ${type}`, cgroupDir);
}

/** False when that program was not attached there. */
export function bpfProgDetach(cgroupDir: string, progFd: number, type: BpfAttachType): boolean {
  const rc = native().bpfProgDetach(cgroupDir, progFd, type);
  if (rc === -constants.errno.ENOENT) return false;
  check(rc, `prog_detach ${type}`, cgroupDir);
  return true;
}

/** Ids of the programs attached to this cgroup itself for `type`. */
export function bpfProgQuery(cgroupDir: string, type: BpfAttachType): number[] {
  return checkObject(native().bpfProgQuery(cgroupDir, type), `prog_query ${type}`, cgroupDir);
}

export function bpfProgInfo(fd: number): BpfProgInfo {
  return checkObject(native().bpfProgInfo(fd), 'prog_info');
}

export function bpfMapInfo(fd: number): BpfMapInfo {
  return checkObject(native().bpfMapInfo(fd), 'map_info');
}

/** An fd for the program with this id (close it with `closeBpfFd`), or undefined once it is freed. */
export function bpfProgFdById(id: number): number | undefined {
  const fd = native().bpfProgGetFdById(id);
  if (fd === -constants.errno.ENOENT) return undefined;
  return check(fd, 'prog_get_fd_by_id', String(id));
}

/** Whether the kernel still holds a program with this id (pinned, attached or open anywhere). */
export function bpfProgExists(id: number): boolean {
  const fd = native().bpfProgGetFdById(id);
  if (fd === -constants.errno.ENOENT) return false;
  closeBpfFd(check(fd, 'prog_get_fd_by_id', String(id)));
  return true;
}

/** Turns on run-time accounting of every BPF program (BPF_ENABLE_STATS) until the returned function is called. */
export function enableBpfStats(): () => void {
  const fd = check(native().bpfEnableStats(), 'enable_stats');
  return () => closeBpfFd(fd);
}
