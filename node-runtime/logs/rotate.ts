import { constants } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';

const COPY_BLOCK = 256 * 1024;
/** Times the copy's window may move ahead of a writer faster than the copy before it gives up. */
const WINDOW_PASSES = 4;
/** Catch-up passes at most, each copying what came in during the one before. */
const CATCH_UP_PASSES = 16;
const { O_RDWR, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = constants;

async function renameIfExists(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** The first line of a `.1` whose live file was cut: `dropped` bytes of it came before what follows. */
export function droppedNote(dropped: number): string {
  return `[orrery: ${dropped} bytes of log dropped: written faster than rotated]\n`;
}

/** The byte count and length of a droppedNote() at the start of `head`, if there is one. */
export function parseDroppedNote(head: Buffer): { dropped: number; length: number } | null {
  const m = /^\[orrery: (\d+) bytes of log dropped: written faster than rotated\]\n/.exec(
    head.toString('latin1', 0, Math.min(head.length, 128)),
  );
  return m ? { dropped: Number(m[1]), length: m[0].length } : null;
}

const NEWLINE = 0x0a;

/** `position`, moved to the start of the next line when one begins in the next 4 KiB. */
async function lineStartNear(source: FileHandle, buffer: Buffer, position: number): Promise<number> {
  if (position === 0) return 0;
  const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, 4096), position - 1);
  const newline = buffer.subarray(0, bytesRead).indexOf(NEWLINE);
  return newline >= 0 ? position + newline : position;
}

export interface Rotation {
  /** Bytes of the live file kept in `.1`. */
  kept: number;
  /** Bytes of the live file not kept: its start beyond `maxBytes`, and what came in during the copy beyond it. */
  dropped: number;
}

/**
 * copytruncate (as logrotate(8) does it), bounded: the child holds its own O_APPEND fd on the live
 * file, so the file cannot be renamed away; instead at most its newest `maxBytes` are copied to
 * `.1` (older files shift up and the oldest beyond `files.length` is dropped) and the live file is
 * truncated to zero. O_APPEND writers then continue at the new end, without a hole. Output
 * beyond the newest `maxBytes` is dropped, oldest first (a line at the cut says how many bytes),
 * so `.1` never exceeds `maxBytes` plus that line, whatever the writer does.
 *
 * The window: a write landing after the last catch-up read and before ftruncate() is lost (counted
 * in `dropped`). The copy catches up until a pass finds nothing new, so for a writer slower than
 * the copy the window is one stat + one ftruncate (microseconds); a writer that never pauses
 * loses what it wrote during the last of the passes.
 *
 * A rotated file ends with a newline: a writer that writes in blocks (a pipe, a buffered stdout)
 * may be in the middle of a line at the cut, and `.1` then gets the newline that ends its part,
 * so the part never runs into what the live file holds next (its rest goes to the live file, or
 * is dropped with the window).
 *
 * `files` are the run's files newest first: live, .1, .2, … Files are created 0600, and none is
 * opened through a symlink.
 */
export async function copyTruncate(files: string[], maxBytes: number): Promise<Rotation> {
  const [live, first] = files;
  if (live === undefined) return { kept: 0, dropped: 0 };
  const source = await open(live, O_RDWR | O_NOFOLLOW);
  try {
    if (first === undefined) {
      const { size } = await source.stat();
      await source.truncate(0);
      return { kept: 0, dropped: size };
    }
    await rm(files[files.length - 1] as string, { force: true });
    for (let i = files.length - 2; i >= 1; i--)
      await renameIfExists(files[i] as string, files[i + 1] as string);
    // Written aside and renamed into place: `.1` is never seen half-written, and a stale or
    // planted file at the temporary name is replaced, not written through.
    const staging = `${first}.rotating`;
    await rm(staging, { force: true });
    const target = await open(staging, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    let kept = 0;
    let dropped = 0;
    try {
      const buffer = Buffer.alloc(COPY_BLOCK);
      // `.1` holds [start, position) of the live file, after a note when start > 0. The window is
      // the newest maxBytes: a writer that adds more during the copy moves it (the copy starts
      // again from the new window), so what is dropped is the oldest output, never the newest.
      // The catch-up ends when a pass finds nothing new, or after CATCH_UP_PASSES (a writer that
      // never pauses), the window moved at most WINDOW_PASSES times; what is left unread then is
      // lost with the truncation.
      let start = 0;
      let position = 0;
      let note = 0;
      let last = NEWLINE; // the last byte copied (the note ends with one)
      for (let pass = 0; pass < CATCH_UP_PASSES; pass++) {
        const size = (await source.stat()).size;
        if (size === position) break;
        if (size - start > maxBytes) {
          if (pass >= WINDOW_PASSES) break;
          start = await lineStartNear(source, buffer, size - maxBytes);
          position = start;
          await target.truncate(0);
          const text = Buffer.from(droppedNote(start));
          await target.write(text, 0, text.length, 0);
          note = text.length;
          last = NEWLINE;
        }
        while (position < size) {
          const want = Math.min(buffer.length, size - position);
          const { bytesRead } = await source.read(buffer, 0, want, position);
          if (bytesRead === 0) break;
          await target.write(buffer, 0, bytesRead, note + position - start);
          position += bytesRead;
          last = buffer[bytesRead - 1] as number;
        }
      }
      const { size } = await source.stat();
      await source.truncate(0);
      kept = note + position - start;
      if (last !== NEWLINE) {
        await target.write(Buffer.of(NEWLINE), 0, 1, kept);
        kept += 1;
      }
      dropped = start + Math.max(0, size - position);
    } finally {
      await target.close();
    }
    await rename(staging, first);
    return { kept, dropped };
  } finally {
    await source.close();
  }
}
