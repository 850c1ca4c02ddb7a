import { open } from 'node:fs/promises';

const BLOCK = 64 * 1024;
const NEWLINE = 0x0a;

/**
 * The last `lines` lines of a run whose files are given newest first (live file, `.1`, `.2`, …),
 * read backwards in blocks so a 10 MiB file costs a few reads, not a full scan. A final line
 * without its newline counts as a line. Missing files are skipped. `liveEnd` bounds how much of
 * the first file is read (follow() uses it so the tail and the stream meet exactly).
 */
export async function tailLines(
  files: string[],
  lines: number | undefined,
  liveEnd?: number,
): Promise<string> {
  if (lines === 0) return '';
  const chunks: Buffer[] = []; // read backwards; reversed before decoding
  let newlines = 0;
  let first = true; // the very last byte overall, to ignore a trailing newline
  for (const [index, file] of files.entries()) {
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(file, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    try {
      let position = index === 0 && liveEnd !== undefined ? liveEnd : (await handle.stat()).size;
      while (position > 0) {
        const length = Math.min(BLOCK, position);
        position -= length;
        const block = Buffer.alloc(length);
        const { bytesRead } = await handle.read(block, 0, length, position);
        const data = block.subarray(0, bytesRead);
        // Scan this block backwards for the newline that starts the wanted window.
        for (let i = data.length - 1; i >= 0; i--) {
          if (data[i] !== NEWLINE) {
            first = false;
            continue;
          }
          if (first) {
            first = false;
            continue;
          }
          newlines++;
          if (lines !== undefined && newlines >= lines) {
            chunks.push(data.subarray(i + 1));
            return Buffer.concat(chunks.reverse()).toString('utf8');
          }
        }
        chunks.push(data);
      }
    } finally {
      await handle.close();
    }
  }
  return Buffer.concat(chunks.reverse()).toString('utf8');
}
