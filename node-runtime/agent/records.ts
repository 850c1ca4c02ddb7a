/**
 * What the agent last ran for each runtime replica: the Replica's uid and the digest of what
 * its spec was built from. A running replica whose object now has another digest (a new uid, a
 * changed template) is stopped and run again. One small file per replica under
 * `<stateDir>/agent/`, written atomically (temp file + rename), so they survive an agent restart
 * next to the runtime's own records.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeAtomic } from '../state/store.ts';

export interface AppliedRecord {
  uid: string;
  digest: string;
}

export class AppliedRecords {
  readonly dir: string;
  readonly #map = new Map<string, AppliedRecord>();
  /** Writes per id chained, so a later record never lands before an earlier one. */
  readonly #chains = new Map<string, Promise<void>>();

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'agent');
  }

  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (const file of await readdir(this.dir)) {
      if (!file.endsWith('.json')) continue;
      try {
        const rec = JSON.parse(await readFile(path.join(this.dir, file), 'utf8')) as AppliedRecord;
        if (typeof rec.uid === 'string' && typeof rec.digest === 'string')
          this.#map.set(file.slice(0, -5), rec);
      } catch {
        // A torn or foreign file: without a record the replica is adopted as it runs.
      }
    }
  }

  get(id: string): AppliedRecord | undefined {
    return this.#map.get(id);
  }

  set(id: string, rec: AppliedRecord): Promise<void> {
    this.#map.set(id, rec);
    // Direct syscalls, no fsync (see writeAtomic in node-runtime/state/store.ts): a record is
    // ~100 bytes, and a threadpool round trip per step cost more than the write.
    return this.#chain(id, () => writeAtomic(path.join(this.dir, `${id}.json`), JSON.stringify(rec), false));
  }

  delete(id: string): Promise<void> {
    if (!this.#map.delete(id)) return this.#chains.get(id) ?? Promise.resolve();
    return this.#chain(id, () => rm(path.join(this.dir, `${id}.json`), { force: true }));
  }

  async flush(): Promise<void> {
    await Promise.all(this.#chains.values());
  }

  #chain(id: string, fn: () => Promise<void>): Promise<void> {
    const next = (this.#chains.get(id) ?? Promise.resolve()).then(fn, fn);
    this.#chains.set(id, next);
    const clean = () => {
      if (this.#chains.get(id) === next) this.#chains.delete(id);
    };
    next.then(clean, clean);
    return next;
  }
}
