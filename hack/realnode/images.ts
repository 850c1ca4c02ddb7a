// The two images the real node runs, built here without a registry or a Docker engine: the pause
// image (the pod sandbox) and the Orrery image that deploy/Dockerfile describes (Node.js 24 and
// the source tree with its production dependencies). Each is a root filesystem assembled in a
// directory and written as an image archive by ociimage (go-containerregistry), which
// `ctr images import` reads.
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, realpath, rm, writeFile } from 'node:fs/promises';
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

/** Copies the libraries `file` loads to the same paths under `root`. */
async function copyLibraries(root: string, file: string): Promise<void> {
  for (const lib of await sharedLibraries(file)) {
    const target = join(root, lib);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(await realpath(lib), target);
  }
}

/** Copies `file` to `at` under `root`, and the libraries it loads. */
async function copyWithLibraries(root: string, file: string, at = file): Promise<void> {
  await mkdir(join(root, dirname(at)), { recursive: true });
  await copyFile(file, join(root, at));
  await copyLibraries(root, file);
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

/** Where the image's package lives, as `npm install --global` puts it under /usr/local. */
export const IMAGE_PACKAGE = '/usr/local/lib/node_modules/orrery';

/**
 * The Orrery image, as deploy/Dockerfile builds it: the node binary that runs this process (the
 * pinned Node.js 24) with the libraries it loads, and the package a user installs — `npm pack` of
 * the checkout, `npm install --global` into the image's /usr/local (its install script builds the
 * native addon and the BPF objects; dependencies from npm's cache when it has them). The package
 * runs its compiled dist/, so no daemon pays for type stripping at each start of a container,
 * whose compile cache is always empty. The Dockerfile's base image is bookworm, as this machine
 * is, so its glibc and libbpf are the ones copied here.
 */
export async function buildOrreryImage(workDir: string, log: (msg: string) => void): Promise<string> {
  const rootfs = join(workDir, 'orrery-rootfs');
  await rm(rootfs, { recursive: true, force: true });
  await mkdir(rootfs, { recursive: true });
  await copyWithLibraries(rootfs, process.execPath, '/usr/local/bin/node');
  for (const dir of ['tmp', 'etc']) await mkdir(join(rootfs, dir), { recursive: true });
  await chmod(join(rootfs, 'tmp'), 0o1777);
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/usr/sbin/nologin\n');
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\n');
  await writeFile(join(rootfs, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');

  log('npm pack and npm install --global into the image');
  const packDir = join(workDir, 'pack');
  await mkdir(packDir, { recursive: true });
  await run('npm', ['pack', '--silent', '--pack-destination', packDir, packagePath('.')], {
    maxBuffer: 16 << 20,
  });
  const tarball = (await readdir(packDir)).find((name) => name.endsWith('.tgz'));
  if (tarball === undefined) throw new Error(`npm pack wrote no tarball into ${packDir}`);
  await run(
    'npm',
    [
      ...['install', '--global', '--prefix', join(rootfs, 'usr/local'), '--allow-scripts=orrery'],
      ...['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', join(packDir, tarball)],
    ],
    { maxBuffer: 16 << 20 },
  );
  const installed = join(rootfs, IMAGE_PACKAGE);
  for (const binary of [
    'node-runtime/native/build/Release/orrery_native.node',
    'node-runtime/native/build/Release/orrery-init',
    'node-runtime/bpf/build/orrery-bpf-load',
  ]) {
    await copyLibraries(rootfs, join(installed, binary));
  }
  const out = join(workDir, 'orrery.tar');
  await writeImage(rootfs, ORRERY_IMAGE, out, [
    '-entrypoint',
    `node,${IMAGE_PACKAGE}/bin/orrery.js`,
    '-env',
    'PATH=/usr/local/bin:/usr/bin:/bin',
  ]);
  return out;
}
