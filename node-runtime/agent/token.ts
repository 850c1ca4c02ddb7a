/**
 * The HTTP API's bearer token: given, or generated once and kept in `<stateDir>/api-token`
 * (mode 0600, like the kubelet's and etcd's secrets on disk), so a restarted agent keeps the
 * token its clients already have.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

const TOKEN_FILE = 'api-token';

export function tokenPath(stateDir: string): string {
  return path.join(stateDir, TOKEN_FILE);
}

/** The token to use: `given` (also written to the file, so local clients find it), else the file's, else a new one. */
export async function ensureToken(stateDir: string, given: string | undefined): Promise<string> {
  const file = tokenPath(stateDir);
  let token = given;
  if (token === undefined) {
    try {
      const existing = (await readFile(file, 'utf8')).trim();
      if (existing.length >= 16) return existing;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    token = randomBytes(32).toString('base64url');
  }
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${token}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
  return token;
}

/** Constant-time comparison of an `Authorization` header against the token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const got = Buffer.from(header.slice(7).trim());
  const want = Buffer.from(token);
  return got.length === want.length && timingSafeEqual(got, want);
}
