import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';

const BLOCK = 64 * 1024;
const NEWLINE = 0x0a;

/** Where a read of a run begins: `files[index]` (newest first) at byte `offset`. */
export interface RunPosition {
  index: number;
  offset: number;
}

/** Opens a log file for reading, never through a symlink; null when it does not exist. */
export async function openLogForRead(file: string): Promise<FileHandle | null> {
  try {
    return await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * Where the last `lines` lines of a run begin, its files given newest first (live file, `.1`,
 * `.2`, …). Scanned backwards in 64 KiB blocks, counting newlines and keeping nothing, so the
 * cost in memory is one block whatever the run's size. A final line without its newline counts
 * as a line; `lines` undefined means the whole run. `liveEnd` bounds how much of the first file
 * counts (follow() uses it so the history and the stream meet exactly).
 */
export async function tailStart(
  files: string[],
  lines: number | undefined,
  liveEnd?: number,
): Promise<RunPosition> {
  if (lines === 0) return { index: 0, offset: liveEnd ?? Number.MAX_SAFE_INTEGER };
  let oldest = 0;
  let newlines = 0;
  let first = true; // the very last byte overall, to ignore a trailing newline
  const block = Buffer.alloc(BLOCK);
  for (const [index, file] of files.entries()) {
    const handle = await openLogForRead(file);
    if (handle === null) continue;
    oldest = index;
    if (lines === undefined) {
      await handle.close();
      continue;
    }
    try {
      let position = index === 0 && liveEnd !== undefined ? liveEnd : (await handle.stat()).size;
      while (position > 0) {
        const length = Math.min(BLOCK, position);
        position -= length;
        const { bytesRead } = await handle.read(block, 0, length, position);
        for (let i = bytesRead - 1; i >= 0; i--) {
          if (block[i] !== NEWLINE) {
            first = false;
            continue;
          }
          if (first) {
            first = false;
            continue;
          }
          if (++newlines >= lines) return { index, offset: position + i + 1 };
        }
      }
    } finally {
      await handle.close();
    }
  }
  return { index: oldest, offset: 0 };
}

/**
 * The bytes of a run from `from` to the end of the live file (`liveEnd`, when given), oldest file
 * first, in blocks of at most 64 KiB: a caller that writes each block before asking for the next
 * holds one block at a time. A file missing (rotated away meanwhile) is skipped.
 */
export async function* readRun(files: string[], from: RunPosition, liveEnd?: number): AsyncGenerator<Buffer> {
  for (let index = from.index; index >= 0; index--) {
    const handle = await openLogForRead(files[index] as string);
    if (handle === null) continue;
    try {
      let position = index === from.index ? from.offset : 0;
      const end = index === 0 && liveEnd !== undefined ? liveEnd : (await handle.stat()).size;
      while (position < end) {
        const buffer = Buffer.allocUnsafe(Math.min(BLOCK, end - position));
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
        if (bytesRead === 0) break;
        position += bytesRead;
        yield buffer.subarray(0, bytesRead);
      }
    } finally {
      await handle.close();
    }
  }
}

/**
 * The size of the live file (`files[0]`) now; 0 when there is none. A read of the last N lines
 * ends there, where it counted them: a writer appending meanwhile adds nothing to it (tail(1)'s
 * "last N lines as of the call").
 */
export async function liveSize(files: string[]): Promise<number> {
  const handle = await openLogForRead(files[0] as string);
  if (handle === null) return 0;
  try {
    return (await handle.stat()).size;
  } finally {
    await handle.close();
  }
}

/** The last `lines` lines of a run as one string: for small reads (tests, tools); the HTTP API streams readRun(). */
export async function tailLines(
  files: string[],
  lines: number | undefined,
  liveEnd?: number,
): Promise<string> {
  const end = liveEnd ?? (await liveSize(files));
  const chunks: Buffer[] = [];
  for await (const chunk of readRun(files, await tailStart(files, lines, end), end)) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}
