/**
 * Synchronous twin of LogStore.prepareRun (node-runtime/logs/store.ts), same file naming
 * (logs/files.ts): the current run and its rotated files become the previous run, and an empty
 * live file is created. It sits on the restart path, where the async version's half-dozen
 * threadpool round trips queue behind state-file fsyncs; on a local filesystem each of these
 * calls takes microseconds. (Adapter kept here so the logs module stays as its owner wrote it.)
 */
import { closeSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { runBase, runFiles } from '../logs/files.ts';

function renameIfExists(from: string, to: string): boolean {
  try {
    renameSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

export class LogRunPreparer {
  readonly #root: string;
  readonly #maxFiles: number;

  constructor(root: string, maxFiles: number) {
    this.#root = root;
    this.#maxFiles = maxFiles;
  }

  prepareRun(replicaId: string, processName: string): string {
    // Every time: the agent may remove a stopped replica's log directory, and the id may return.
    mkdirSync(path.join(this.#root, replicaId), { recursive: true });
    const live = runBase(this.#root, replicaId, processName, false);
    const previous = runBase(this.#root, replicaId, processName, true);
    if (renameIfExists(live, previous)) {
      const liveFiles = runFiles(live, this.#maxFiles);
      const previousFiles = runFiles(previous, this.#maxFiles);
      for (let i = 1; i < liveFiles.length; i++) {
        if (!renameIfExists(liveFiles[i] as string, previousFiles[i] as string)) {
          rmSync(previousFiles[i] as string, { force: true });
        }
      }
    }
    // Created here so a follower can open it before the child's first write.
    closeSync(openSync(live, 'a'));
    return live;
  }
}
