/**
 * Machine-wide claims: several runtimes may share a machine (tests, `orrery up --hosts`, a node
 * running two), and what must not be handed out twice (a user namespace slot, an allocated port)
 * is claimed by a file created O_EXCL, holding JSON that names the claiming runtime's state dir.
 * A claim whose state dir is gone (a runtime removed with its state) is stale and taken over; any
 * other belongs to a runtime on the machine, this one included.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

/** The content of a claim: `{"stateDir": ..., ...extra}` and a newline. */
export function claimContent(stateDir: string, extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify({ stateDir, ...extra })}\n`;
}

/** Creates the claim `file` with `content` (claimContent()); false when a live one holds it. */
export function claim(file: string, content: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, content, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let held: { stateDir?: unknown };
    try {
      held = JSON.parse(readFileSync(file, 'utf8')) as { stateDir?: unknown };
    } catch {
      return false; // being written right now, or not ours to judge
    }
    if (typeof held.stateDir !== 'string' || existsSync(held.stateDir)) return false;
    rmSync(file, { force: true }); // its runtime is gone with its state: stale
  }
  return false;
}

/** Whether the claim `file` exists and holds exactly `content`. */
export function holdsClaim(file: string, content: string): boolean {
  try {
    return readFileSync(file, 'utf8') === content;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
