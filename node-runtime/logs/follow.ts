import { type FSWatcher, watch } from 'node:fs';
import { type FileHandle, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { parseDroppedNote } from './rotate.ts';
import { openLogForRead, readRun, tailStart } from './tail.ts';

export interface FollowOptions {
  /** The current run's files, newest first: live, .1, .2, … */
  files: string[];
  /** Lines of history to send first; undefined sends the whole run. */
  lines?: number;
  signal: AbortSignal;
  /**
   * A slow safety net in case an inotify event is lost (queue overflow): re-check this often.
   * Not a busy poll; new data is normally delivered on the inotify event.
   */
  recheckMs?: number;
  /**
   * Called where one run ends and the next begins (the process restarted); what it returns is
   * sent there, on a line of its own, between the two runs' output (the HTTP API's run markers).
   */
  onNewRun?: () => Promise<string | undefined>;
}

const READ_BLOCK = 64 * 1024;

const openIfExists = openLogForRead;

/** Reads [from, to) of a file (to = EOF when undefined), in blocks. */
async function* readRange(handle: FileHandle, from: number, to?: number): AsyncGenerator<Buffer> {
  let position = from;
  for (;;) {
    const want = to === undefined ? READ_BLOCK : Math.min(READ_BLOCK, to - position);
    if (want <= 0) return;
    const buffer = Buffer.alloc(want);
    const { bytesRead } = await handle.read(buffer, 0, want, position);
    if (bytesRead === 0) return;
    position += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
}

/**
 * Streams a process log as it grows. The replica directory is watched with inotify (fs.watch),
 * which sees appends to the live file, the rename by prepareRun() (a new run: the old file is
 * drained, then the new one followed from its start) and copytruncate rotation (the size drops
 * below our offset: the rest of what we had not read is in `.1`, so it is read from there first).
 */
export async function* followRun({
  files,
  lines,
  signal,
  recheckMs = 1_000,
  onNewRun,
}: FollowOptions): AsyncGenerator<string> {
  const [live, rotated] = files;
  if (live === undefined || signal.aborted) return;
  const dir = dirname(live);
  await stat(dir).catch((error: NodeJS.ErrnoException) => {
    throw new Error(`no logs at ${dir}: ${error.code}`, { cause: error });
  });

  let pending = true;
  let wakeUp: (() => void) | null = null;
  const wake = () => {
    pending = true;
    wakeUp?.();
  };
  const sleepUntilWoken = async () => {
    if (pending) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      wakeUp = resolve;
      timer = setTimeout(resolve, recheckMs);
    });
    clearTimeout(timer);
    wakeUp = null;
  };
  signal.addEventListener('abort', wake, { once: true });
  const watcher: FSWatcher = watch(dir, { persistent: false }, wake);
  watcher.on('error', wake);

  /** The live file, once it exists (a replica that has not started yet has none); null when aborted. */
  const openWhenPresent = async (): Promise<FileHandle | null> => {
    for (;;) {
      pending = false;
      const opened = await openIfExists(live);
      if (opened !== null || signal.aborted) return opened;
      await sleepUntilWoken();
    }
  };

  let handle: FileHandle | null = null;
  try {
    handle = await openWhenPresent();
    if (handle === null) return;
    let offset = (await handle.stat()).size;
    let decoder = new StringDecoder('utf8');
    /** Whether what was sent last ended a line (a marker goes on a line of its own). */
    let endsLine = true;
    // The history streamed too, block by block: the consumer's pace, not the run's size, bounds memory.
    for await (const chunk of readRun(files, await tailStart(files, lines, offset), offset)) {
      const text = decoder.write(chunk);
      if (text !== '') {
        yield text;
        endsLine = text.endsWith('\n');
      }
      if (signal.aborted) return;
    }

    while (!signal.aborted) {
      pending = false;
      const { size, ino } = await handle.stat();
      if (size < offset) {
        // Truncated by copytruncate: what we had not read yet went to `.1`.
        const copy = rotated === undefined ? null : await openIfExists(rotated);
        if (copy !== null) {
          try {
            // A cut live file: `.1` starts with a note, then the old file from byte `dropped` on.
            const head = Buffer.alloc(128);
            const { bytesRead } = await copy.read(head, 0, head.length, 0);
            const note = parseDroppedNote(head.subarray(0, bytesRead));
            const from = note === null ? offset : Math.max(note.length, offset - note.dropped + note.length);
            if (note !== null && offset < note.dropped) yield decoder.write(head.subarray(0, note.length));
            if ((await copy.stat()).size >= from) {
              for await (const chunk of readRange(copy, from)) yield decoder.write(chunk);
            }
          } finally {
            await copy.close();
          }
        }
        offset = 0;
      }
      for await (const chunk of readRange(handle, offset)) {
        offset += chunk.length;
        const text = decoder.write(chunk);
        if (text !== '') {
          yield text;
          endsLine = text.endsWith('\n');
        }
        if (signal.aborted) return;
      }
      // A new run (prepareRun renamed the file away): the old file is drained, switch over.
      const current = await stat(live).catch(() => null);
      if (current !== null && current.ino !== ino) {
        await handle.close();
        const marker = await onNewRun?.();
        if (marker !== undefined && !signal.aborted) {
          yield `${endsLine ? '' : '\n'}${marker}\n`;
          endsLine = true;
        }
        handle = await openWhenPresent();
        if (handle === null) return;
        offset = 0;
        decoder = new StringDecoder('utf8');
        continue;
      }
      await sleepUntilWoken();
    }
  } finally {
    signal.removeEventListener('abort', wake);
    watcher.close();
    await handle?.close();
  }
}
