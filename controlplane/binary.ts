// Builds a Go program once and caches the binary, keyed by what decides its content: go.mod,
// go.sum, the Go sources of its directory and the Go toolchain's version. A second call (another
// test file, another `npm test`) finds it and does not rebuild. The control plane is one such
// program; the real-node test's Kubernetes node components (hack/realnode) are another.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { access, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { packagePath } from '../platform/package.ts';
import { privateDir } from '../platform/private-fs.ts';

const execFileAsync = promisify(execFile);

/** A Go main package to build and cache. */
export interface GoProgram {
  /** The module's directory. */
  sourceDir: string;
  binaryName: string;
  /** Cache subdirectory: `<cache>/orrery/<cacheName>/<hash>/<binaryName>`. */
  cacheName: string;
  /** What it is, for progress lines (`kube-apiserver + etcd`). */
  what: string;
  /** -ldflags, e.g. the version variables. */
  ldflags?: () => Promise<string>;
}

/** The Go module of the control plane (this file's directory). */
const controlPlane: GoProgram = {
  sourceDir: packagePath('controlplane'),
  binaryName: 'orrery-controlplane',
  cacheName: 'controlplane',
  what: 'kube-apiserver + etcd',
  ldflags: () => versionLdflags(packagePath('controlplane')),
};

export interface EnsureBinaryOptions {
  /** Receives progress lines while a build runs (it takes minutes when cold). */
  log?: (msg: string) => void;
}

export interface ControlPlaneBinary {
  path: string;
  /** Whether this call compiled it (false: found in the cache, or built by a concurrent caller). */
  built: boolean;
  /** Time this call spent building or waiting for a concurrent build; 0 on a cache hit. */
  buildMs: number;
}

/** `${XDG_CACHE_HOME:-$HOME/.cache}/orrery/<name>`, as the XDG base directory spec says. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env, name = controlPlane.cacheName): string {
  const xdg = env.XDG_CACHE_HOME;
  const base = xdg?.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'orrery', name);
}

/** Environment for every `go` invocation: never download a toolchain (go.mod says 1.23, we have newer). */
function goEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GOTOOLCHAIN: 'local' };
}

/** Hex sha256 over go.mod, go.sum, every *.go file of the module's directory (sorted by name) and `go env GOVERSION`. */
async function sourceHash(sourceDir: string): Promise<string> {
  const hash = createHash('sha256');
  const goFiles = (await readdir(sourceDir)).filter((f) => f.endsWith('.go')).sort();
  for (const file of ['go.mod', 'go.sum', ...goFiles]) {
    hash.update(`${file}\0`);
    hash.update(await readFile(join(sourceDir, file)));
    hash.update('\0');
  }
  let goVersion: string;
  try {
    goVersion = (await execFileAsync('go', ['env', 'GOVERSION'], { env: goEnv() })).stdout.trim();
  } catch (err) {
    throw new Error(`the Go toolchain (\`go\` on PATH) is needed to build ${sourceDir}`, {
      cause: err,
    });
  }
  hash.update(goVersion);
  return hash.digest('hex').slice(0, 16);
}

async function exists(path: string, mode = constants.X_OK): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes DIR/build.lock with O_EXCL so parallel test workers build once; the others wait for the
 * binary. A lock whose owner pid is gone (a killed build) is broken.
 */
async function acquireLock(lockPath: string, binPath: string): Promise<'locked' | 'built-by-other'> {
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return 'locked';
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await exists(binPath)) return 'built-by-other';
    const owner = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
      await rm(lockPath, { force: true });
      continue;
    }
    await sleep(500);
  }
}

export function ensureControlPlaneBinary(opts: EnsureBinaryOptions = {}): Promise<ControlPlaneBinary> {
  return ensureGoBinary(controlPlane, opts);
}

export async function ensureGoBinary(
  program: GoProgram,
  opts: EnsureBinaryOptions = {},
): Promise<ControlPlaneBinary> {
  const log = opts.log ?? (() => {});
  const { binaryName } = program;
  const dir = join(cacheRoot(process.env, program.cacheName), await sourceHash(program.sourceDir));
  const path = join(dir, binaryName);
  if (await exists(path)) return { path, built: false, buildMs: 0 };

  // Only its owner may write where the binary the tests and `up` run as root is built.
  privateDir(dir);
  const started = performance.now();
  const lockPath = join(dir, 'build.lock');
  if ((await acquireLock(lockPath, path)) === 'built-by-other') {
    return { path, built: false, buildMs: Math.round(performance.now() - started) };
  }
  try {
    if (await exists(path)) return { path, built: false, buildMs: Math.round(performance.now() - started) };
    log(`building ${binaryName} (${program.what}) into ${dir}; a cold build takes several minutes`);
    const tmp = join(dir, `.${binaryName}.${process.pid}.tmp`);
    // Left by a build killed with this pid: go build must not write through whatever is there.
    await rm(tmp, { force: true });
    try {
      await goBuild(program, tmp, log);
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    const buildMs = Math.round(performance.now() - started);
    log(`built ${binaryName} in ${(buildMs / 1000).toFixed(1)} s`);
    await pruneOldBuilds(dir, log);
    return { path, built: true, buildMs };
  } finally {
    await rm(lockPath, { force: true });
  }
}

/** The k8s.io/kubernetes release a module's go.mod requires, e.g. `v1.32.13`. */
export async function kubernetesVersion(sourceDir = controlPlane.sourceDir): Promise<string> {
  const goMod = await readFile(join(sourceDir, 'go.mod'), 'utf8');
  const match = /^\s*k8s\.io\/kubernetes (v1\.\d+\.\d+)\s*$/m.exec(goMod);
  if (!match?.[1]) throw new Error(`${join(sourceDir, 'go.mod')} does not require k8s.io/kubernetes v1.x.y`);
  return match[1];
}

/**
 * The version the apiserver reports (`kubectl version`, /version) comes from variables that the
 * Kubernetes release build sets with -X (hack/lib/version.sh); without them it says v0.0.0-master.
 */
export async function versionLdflags(sourceDir: string): Promise<string> {
  const v = await kubernetesVersion(sourceDir);
  const [major, minor] = v.slice(1).split('.');
  const pkg = 'k8s.io/component-base/version';
  return [
    `-X ${pkg}.gitVersion=${v}`,
    `-X ${pkg}.gitMajor=${major}`,
    `-X ${pkg}.gitMinor=${minor}`,
    `-X ${pkg}.gitTreeState=clean`,
  ].join(' ');
}

/** Older builds kept besides the current one (each is ~140 MB). */
const keepOldBuilds = 3;

/**
 * Removes all but the `keepOldBuilds` most recent other builds. A process still running a removed
 * binary is unaffected (the inode lives until it exits); a dir with a build in progress is skipped.
 */
async function pruneOldBuilds(current: string, log: (msg: string) => void): Promise<void> {
  const root = dirname(current);
  const others: { dir: string; mtimeMs: number }[] = [];
  for (const entry of await readdir(root, { withFileTypes: true })) {
    const dir = join(root, entry.name);
    if (!entry.isDirectory() || dir === current) continue;
    if (await exists(join(dir, 'build.lock'), constants.F_OK)) continue;
    const info = await stat(dir).catch(() => undefined);
    if (info) others.push({ dir, mtimeMs: info.mtimeMs });
  }
  others.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const { dir } of others.slice(keepOldBuilds)) {
    await rm(dir, { recursive: true, force: true });
    log(`removed old build ${dir}`);
  }
}

/** `go build -trimpath -v`: -v lists each package as it is compiled, which is the progress we report. */
async function goBuild(program: GoProgram, output: string, log: (msg: string) => void): Promise<void> {
  const { sourceDir } = program;
  const ldflags = (await program.ldflags?.()) ?? '';
  return new Promise((resolve, reject) => {
    const child = spawn('go', ['build', '-trimpath', '-v', '-ldflags', ldflags, '-o', output, '.'], {
      cwd: sourceDir,
      env: goEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let packages = 0;
    let tail = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      packages += chunk.split('\n').filter((l) => l.length > 0 && !l.includes(' ')).length;
      tail = (tail + chunk).slice(-4000);
    });
    const started = Date.now();
    const progress = setInterval(() => {
      log(`still building: ${packages} packages compiled, ${Math.round((Date.now() - started) / 1000)} s`);
    }, 15_000);
    child.on('error', (err) => {
      clearInterval(progress);
      reject(new Error(`cannot run \`go build\` in ${sourceDir}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearInterval(progress);
      if (code === 0) resolve();
      else
        reject(
          new Error(
            `go build in ${sourceDir} failed (${signal ? `signal ${signal}` : `exit code ${code}`}):\n${tail}`,
          ),
        );
    });
  });
}

// `node controlplane/binary.ts` builds (or finds) the binary and prints its path, e.g.
// before a single-file `npx ava` run, whose 3-minute timeout a cold build would exceed.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureControlPlaneBinary({ log: (msg) => console.error(msg) }).then(
    (result) => console.log(result.path),
    (err: Error) => {
      console.error(err.message);
      process.exitCode = 1;
    },
  );
}
