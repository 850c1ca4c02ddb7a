// Builds the kernel fast path (README.md): sock_lb.bpf.o with `clang -target bpf -O2 -g`, and
// orrery-bpf-load linked to the system's libbpf.so (Debian's libbpf.a is not position-independent;
// the loader is a program of its own, so the addon never needs libbpf). Called by
// ../native/build.mjs after the addon; by hand: `node node-runtime/bpf/build.mjs`.
//
// Without the toolchain (clang with its bpf target, libbpf-dev's headers and library) the build
// prints one line and leaves no output, and the runtime keeps the fast path off: `npm ci`
// succeeds either way. With the toolchain present, a failure to compile is a build error.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'build');

function run(cmd, args, input) {
  const r = spawnSync(cmd, args, { cwd: here, input, encoding: 'utf8' });
  return { ok: r.status === 0, missing: r.error?.code === 'ENOENT', stderr: r.stderr ?? '' };
}

/** Why the toolchain cannot build the fast path here, or undefined when it can. */
function missingToolchain(clang, cc, multiarch) {
  if (run(clang, ['--version']).missing) return `${clang} not found`;
  const bpfProbe = run(
    clang,
    ['-target', 'bpf', `-I/usr/include/${multiarch}`, '-E', '-x', 'c', '-', '-o', '/dev/null'],
    '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n',
  );
  if (!bpfProbe.ok) return `clang -target bpf cannot use libbpf's headers (${firstLine(bpfProbe.stderr)})`;
  const libProbe = run(
    cc,
    ['-x', 'c', '-', '-o', '/dev/null', '-lbpf'],
    '#include <bpf/libbpf.h>\nint main(void) { return libbpf_major_version() == 0; }\n',
  );
  if (!libProbe.ok) return `cannot link with libbpf (${firstLine(libProbe.stderr)})`;
  return undefined;
}

function firstLine(text) {
  return text.split('\n').find((l) => l.trim() !== '') ?? 'no message';
}

export function buildBpf() {
  rmSync(out, { recursive: true, force: true });
  const clang = process.env.CLANG || 'clang';
  const cc = process.env.CC || 'cc';
  const machine = spawnSync(cc, ['-dumpmachine'], { encoding: 'utf8' });
  const multiarch =
    machine.status === 0
      ? machine.stdout.trim()
      : `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
  const missing = missingToolchain(clang, cc, multiarch);
  if (missing) {
    console.log(
      `orrery: kernel fast path off: ${missing}; install clang, libbpf-dev and bpftool to build it (the mesh proxy serves every Service port meanwhile)`,
    );
    return false;
  }
  mkdirSync(out, { recursive: true });
  const steps = [
    [
      clang,
      [
        '-target',
        'bpf',
        '-O2',
        '-g',
        '-Wall',
        `-I/usr/include/${multiarch}`,
        '-c',
        'sock_lb.bpf.c',
        '-o',
        join(out, 'sock_lb.bpf.o'),
      ],
    ],
    [cc, ['-O2', '-Wall', '-Wextra', 'loader.c', '-o', join(out, 'orrery-bpf-load'), '-lbpf']],
  ];
  for (const [cmd, args] of steps) {
    const r = spawnSync(cmd, args, { cwd: here, stdio: 'inherit' });
    if (r.status !== 0) {
      rmSync(out, { recursive: true, force: true });
      throw new Error(
        `orrery: building the BPF fast path failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`,
      );
    }
  }
  console.log(`orrery: kernel fast path built (${out})`);
  return true;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) buildBpf();
