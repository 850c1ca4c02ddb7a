// A directory to run workloads in (EngineOptions.workloadRoot, SpawnRequest.root), as the node's
// filesystem is to a runtime in a container: made under a test's own temporary directory, removed
// with it, no mount needed.
import { execFileSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const ROOT_MARKER = 'the node root';

/**
 * A root with what `sh` and `cat` need and a marker file (as the node's filesystem is to a runtime
 * in a container): binaries and their loader copied in, /dev/null made, an empty /proc.
 */
export async function minimalRoot(parent: string): Promise<string> {
  const root = path.join(parent, 'node-root');
  const copy = async (from: string, to: string) => {
    await mkdir(path.dirname(path.join(root, to)), { recursive: true });
    await copyFile(realpathSync(from), path.join(root, to));
    await chmod(path.join(root, to), 0o755);
  };
  await copy('/bin/sh', '/usr/bin/sh');
  await copy('/bin/cat', '/usr/bin/cat');
  // What `ldd` names for them (Debian's dash and coreutils need libc and the loader only).
  const libs = execFileSync('ldd', ['/bin/sh', '/bin/cat'], { encoding: 'utf8' });
  for (const m of libs.matchAll(/(?:=> )?(\/\S+) \(0x/g)) await copy(m[1] as string, m[1] as string);
  await mkdir(path.join(root, 'dev'), { recursive: true });
  execFileSync('mknod', ['-m', '666', path.join(root, 'dev', 'null'), 'c', '1', '3']);
  await mkdir(path.join(root, 'proc'));
  await writeFile(path.join(root, 'root-marker'), `${ROOT_MARKER}\n`);
  await chmod(parent, 0o711);
  await chmod(root, 0o755);
  return root;
}
