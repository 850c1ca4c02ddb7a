// The two images the real node runs, built here without a registry or a Docker engine: the pause
// image (the pod sandbox) and the Orrery image that deploy/Dockerfile describes (Node.js 24 and
// the source tree with its production dependencies). Each is a root filesystem assembled in a
// directory and written as an image archive by ociimage (go-containerregistry), which
// `ctr images import` reads.
import { execFile } from 'node:child_process';
import { chmod, copyFile, cp, mkdir, realpath, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { ensureGoBinary } from '../../controlplane/binary.ts';
import { packagePath } from '../../platform/package.ts';

const run = promisify(execFile);

/** The names deploy/ and the containerd configuration use. */
export const ORRERY_IMAGE = 'docker.io/library/orrery:dev';
export const PAUSE_IMAGE = 'orrery.local/pause:1';

const ociimage = () =>
  ensureGoBinary({
    sourceDir: packagePath('hack/realnode/ociimage'),
    binaryName: 'ociimage',
    cacheName: 'realnode-ociimage',
    what: 'image archive writer, go-containerregistry',
  });

/** Every shared library an ELF file loads (ldd), with the dynamic loader. */
async function sharedLibraries(file: string): Promise<string[]> {
  const { stdout } = await run('ldd', [file]).catch(() => ({ stdout: '' })); // static: none
  const libs = new Set<string>();
  for (const line of stdout.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]) libs.add(m[1]);
  }
  return [...libs];
}

/** Copies `file` to the same path under `root`, and the libraries it loads. */
async function copyWithLibraries(root: string, file: string, at = file): Promise<void> {
  await mkdir(join(root, dirname(at)), { recursive: true });
  await copyFile(file, join(root, at));
  for (const lib of await sharedLibraries(file)) {
    const target = join(root, lib);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(await realpath(lib), target);
  }
}

async function writeImage(rootfs: string, tag: string, out: string, args: string[]): Promise<void> {
  const { path } = await ociimage();
  await run(path, ['-rootfs', rootfs, '-tag', tag, '-out', out, ...args], { maxBuffer: 16 << 20 });
}

/** The pause image: a static `pause` (hack/realnode/pause/pause.c), nothing else. */
export async function buildPauseImage(workDir: string): Promise<string> {
  const rootfs = join(workDir, 'pause-rootfs');
  await rm(rootfs, { recursive: true, force: true });
  await mkdir(rootfs, { recursive: true });
  await run('cc', [
    '-static',
    '-O2',
    '-o',
    join(rootfs, 'pause'),
    packagePath('hack/realnode/pause/pause.c'),
  ]);
  const out = join(workDir, 'pause.tar');
  await writeImage(rootfs, PAUSE_IMAGE, out, ['-entrypoint', '/pause']);
  return out;
}

/**
 * The Orrery image, as deploy/Dockerfile builds it: the node binary that runs this process (the
 * pinned Node.js 24) with the libraries it loads, and /opt/orrery with the checkout's source tree,
 * the built native addon and BPF objects, and the production dependencies (`npm ci --omit=dev`,
 * from npm's cache). The Dockerfile's base image is bookworm, as this machine is, so its glibc is
 * the one copied here.
 */
export async function buildOrreryImage(workDir: string, log: (msg: string) => void): Promise<string> {
  const repo = packagePath('.');
  const rootfs = join(workDir, 'orrery-rootfs');
  await rm(rootfs, { recursive: true, force: true });
  const app = join(rootfs, 'opt/orrery');
  await mkdir(app, { recursive: true });

  await copyWithLibraries(rootfs, process.execPath, '/usr/local/bin/node');
  for (const dir of ['tmp', 'etc']) await mkdir(join(rootfs, dir), { recursive: true });
  await chmod(join(rootfs, 'tmp'), 0o1777);
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/usr/sbin/nologin\n');
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\n');
  await writeFile(join(rootfs, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');

  // The checkout as it is: tracked files and new ones, not what .gitignore names.
  const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repo,
    maxBuffer: 64 << 20,
  });
  const files = stdout.split('\0').filter((f) => f && !f.startsWith('test/') && !f.startsWith('bench/'));
  for (const file of files) {
    const from = join(repo, file);
    const to = join(app, file);
    await mkdir(dirname(to), { recursive: true });
    await cp(from, to, { verbatimSymlinks: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err; // deleted in the working tree, not yet in git
    });
  }
  // What `npm ci` built (the install script): the addon, orrery-init, the BPF objects and loader.
  for (const built of ['node-runtime/native/build/Release', 'node-runtime/bpf/build']) {
    await cp(join(repo, built), join(app, built), { recursive: true });
  }
  for (const binary of [
    'node-runtime/native/build/Release/orrery-init',
    'node-runtime/bpf/build/orrery-bpf-load',
  ]) {
    for (const lib of await sharedLibraries(join(repo, binary))) {
      await mkdir(dirname(join(rootfs, lib)), { recursive: true });
      await copyFile(await realpath(lib), join(rootfs, lib));
    }
  }
  log('npm ci --omit=dev for the image (offline, from npm cache)');
  await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], {
    cwd: app,
    maxBuffer: 16 << 20,
  });
  const out = join(workDir, 'orrery.tar');
  await writeImage(rootfs, ORRERY_IMAGE, out, [
    '-entrypoint',
    'node,/opt/orrery/bin/orrery.js',
    '-workdir',
    '/opt/orrery',
    '-env',
    'PATH=/usr/local/bin:/usr/bin:/bin',
  ]);
  return out;
}
