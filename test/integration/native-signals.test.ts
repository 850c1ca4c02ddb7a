// Signal dispositions across spawn: whatever the runtime (Node) catches or ignores, the workload
// starts with every signal at its default and none blocked, with or without orrery-init; and
// orrery-init, which keeps everything blocked and takes signals with sigwaitinfo (no handlers),
// loses none sent before it is ready and forwards real-time ones too.
import { readFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { type Namespace, type SpawnRequest, sendSignal } from '../../node-runtime/native/index.ts';
import { runNative } from './fixtures/native-run.ts';

const isolated: Namespace[] = ['pid', 'mount', 'uts', 'ipc'];
const modes = [
  { title: 'without init', namespaces: [] as Namespace[] },
  { title: 'under orrery-init', namespaces: isolated },
];

function run(
  t: ExecutionContext,
  namespaces: Namespace[],
  req: Partial<SpawnRequest> & Pick<SpawnRequest, 'file' | 'argv'>,
) {
  return runNative(t, { namespaces, ...req }, { exitStatusFile: true, prefix: 'orrery-native-sig-' });
}

/** The SigXxx masks of /proc/<pid>/status as bigints. */
function signalMasks(status: string): Record<string, bigint> {
  const masks: Record<string, bigint> = {};
  for (const m of status.matchAll(/^(Sig\w+|ShdPnd):\s+([0-9a-f]+)$/gm)) {
    if (m[1] && m[2]) masks[m[1]] = BigInt(`0x${m[2]}`);
  }
  return masks;
}

const bit = (signo: number) => 1n << BigInt(signo - 1);

for (const { title, namespaces } of modes) {
  test(`${title}: a workload starts with nothing caught, ignored or blocked while the runtime has handlers and ignores SIGPIPE`, async (t) => {
    const noop = () => {};
    process.on('SIGUSR2', noop);
    process.on('SIGINT', noop);
    t.teardown(() => {
      process.off('SIGUSR2', noop);
      process.off('SIGINT', noop);
    });
    // The precondition that makes this test mean something: Node ignores SIGPIPE and now catches
    // SIGUSR2 and SIGINT.
    const own = signalMasks(readFileSync('/proc/self/status', 'utf8'));
    t.is((own.SigIgn ?? 0n) & bit(13), bit(13), 'the runtime ignores SIGPIPE');
    t.is((own.SigCgt ?? 0n) & (bit(12) | bit(2)), bit(12) | bit(2), 'the runtime catches SIGUSR2 and SIGINT');

    const { exited, log } = run(t, namespaces, { file: '/bin/cat', argv: ['cat', '/proc/self/status'] });
    t.deepEqual(await exited, { code: 0, signal: null }, log());
    const masks = signalMasks(log());
    t.is(masks.SigBlk, 0n, 'nothing blocked');
    t.is(masks.SigIgn, 0n, 'nothing ignored');
    t.is(masks.SigCgt, 0n, 'nothing caught');
  });

  test(`${title}: a workload writing to a closed pipe dies of SIGPIPE (it is not ignored as in Node)`, async (t) => {
    // yes is killed by SIGPIPE (status 141 in sh) once head exits; were SIGPIPE ignored, it
    // would get EPIPE and exit 1 instead. Found through sh's default PATH (the environment is
    // empty): /usr/bin or /bin, wherever the distribution puts them.
    const { exited, log } = run(t, namespaces, {
      file: '/bin/sh',
      argv: ['sh', '-c', '(yes; echo "yes exited $?" >&2) | head -n1 >/dev/null'],
    });
    t.deepEqual(await exited, { code: 0, signal: null }, log());
    t.is(log().trim(), 'yes exited 141');
  });
}

test('a signal sent right after spawn returns, before orrery-init is ready, is not lost', async (t) => {
  for (let i = 0; i < 20; i++) {
    const { child, exited } = run(t, isolated, { file: '/bin/sleep', argv: ['sleep', '30'] });
    sendSignal(child.pidfd, 'SIGTERM');
    t.deepEqual(await exited, { code: null, signal: 'SIGTERM' }, `round ${i}`);
  }
});

test('orrery-init forwards a real-time signal to the workload', async (t) => {
  const { child, exited, log } = run(t, isolated, {
    file: '/bin/sh',
    argv: ['sh', '-c', 'trap "echo got-40; exit 0" 40; echo ready; while :; do sleep 0.02; done'],
  });
  const deadline = Date.now() + 10_000;
  while (!log().includes('ready')) {
    if (Date.now() > deadline) t.fail('timed out waiting for the workload to install its trap');
    await new Promise((r) => setTimeout(r, 10));
  }
  sendSignal(child.pidfd, 40);
  t.deepEqual(await exited, { code: 0, signal: null });
  t.true(log().includes('got-40'));
});
