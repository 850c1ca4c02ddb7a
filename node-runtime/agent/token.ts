/**
 * The HTTP API's bearer token: given, or generated once and kept in `<stateDir>/api-token`
 * (mode 0600, like the kubelet's and etcd's secrets on disk), so a restarted agent keeps the
 * token its clients already have.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { privateDir, writePrivateFile } from '../../platform/private-fs.ts';
import { tokenPath } from '../../platform/runtime-api.ts';

// Where the token lives is shared with the clients, which read it there.
export { tokenPath };

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
  privateDir(stateDir);
  // Exclusive create, never through a symlink, 0600 under any umask; then renamed into place.
  writePrivateFile(file, `${token}\n`);
  return token;
}

/** Constant-time comparison of an `Authorization` header against the token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const got = Buffer.from(header.slice(7).trim());
  const want = Buffer.from(token);
  return got.length === want.length && timingSafeEqual(got, want);
}
