// Facts about filesystems that decide where Orrery keeps things.
import { statfsSync } from 'node:fs';

/** statfs(2) f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;

/** Whether `dir` is on tmpfs (false when it does not exist). */
export function isTmpfs(dir: string): boolean {
  try {
    return statfsSync(dir).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}
