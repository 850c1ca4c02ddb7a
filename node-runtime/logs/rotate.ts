import { open, rename, rm } from 'node:fs/promises';

const COPY_BLOCK = 256 * 1024;

async function renameIfExists(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/**
 * copytruncate (as logrotate(8) does it): the child holds its own O_APPEND fd on the live file, so
 * the file cannot be renamed away; instead its content is copied to `.1` (older files shift up and
 * the oldest beyond `files.length` is dropped) and the live file is truncated to zero. O_APPEND
 * writers then continue at the new end, without a hole.
 *
 * The window: a write landing after the last catch-up copy and before ftruncate() is lost. The
 * copy catches up until a pass finds nothing new, so the window is one stat + one ftruncate
 * (microseconds), not the whole copy; lines written meanwhile are lost, never duplicated or corrupted.
 *
 * `files` are the run's files newest first: live, .1, .2, …
 */
export async function copyTruncate(files: string[]): Promise<void> {
  const [live, first] = files;
  if (live === undefined) return;
  const source = await open(live, 'r+');
  try {
    if (first === undefined) {
      await source.truncate(0);
      return;
    }
    await rm(files[files.length - 1] as string, { force: true });
    for (let i = files.length - 2; i >= 1; i--)
      await renameIfExists(files[i] as string, files[i + 1] as string);
    const target = await open(first, 'w');
    try {
      const buffer = Buffer.alloc(COPY_BLOCK);
      let copied = 0;
      for (;;) {
        const { bytesRead } = await source.read(buffer, 0, buffer.length, copied);
        if (bytesRead === 0) break;
        await target.write(buffer, 0, bytesRead, copied);
        copied += bytesRead;
      }
      await source.truncate(0);
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}
