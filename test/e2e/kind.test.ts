// Orrery on a real Kubernetes cluster (kind): hack/kind-e2e.sh builds the image, creates the
// cluster and runs hack/e2e-checks.sh, the checks the real-node test (realnode.test.ts) runs on
// this machine. It needs a Docker engine and the kind binary; where either is missing the test is
// skipped and says why. The test has its own t.timeout() covering the script's bound, since ava's
// default (3 min) cannot.
import test from 'ava';
import { runScript as run, tail } from '../helpers/script.ts';
import { runs } from '../helpers/skip.ts';

/** The script's own bound; past it the process group gets SIGTERM (the script's trap deletes the cluster). */
const KIND_TIMEOUT_MS = 20 * 60_000;
/** After that SIGTERM, time for the script's cleanup (kind delete cluster) before SIGKILL. */
const CLEANUP_GRACE_MS = 2 * 60_000;

async function missing(): Promise<string | undefined> {
  const kind = await run('kind', ['version'], { timeoutMs: 10_000 });
  if (kind.code !== 0) return 'the kind binary is not on PATH';
  const docker = await run('docker', ['info'], { timeoutMs: 20_000 });
  if (docker.timedOut) return 'no Docker engine answers (docker info: no answer within 20 s)';
  if (docker.code !== 0)
    return `no Docker engine answers (docker info: ${(docker.stderr || docker.error?.message || '').trim().split('\n')[0]})`;
  return undefined;
}

const reason = await missing();

test.runIf(runs(reason, 'kind e2e'))(
  'kind: deploy/ runs the examples, survives a runtime restart and leaves nothing (hack/e2e-checks.sh)',
  async (t) => {
    t.timeout(KIND_TIMEOUT_MS + CLEANUP_GRACE_MS + 60_000, 'hack/kind-e2e.sh and its cleanup');
    let stop: (() => void) | undefined;
    let done = false;
    // Should the test end any other way (ava's timeout included), nothing of the script runs on.
    t.teardown(() => {
      if (!done) stop?.();
    });
    const result = await run('bash', ['hack/kind-e2e.sh'], {
      timeoutMs: KIND_TIMEOUT_MS,
      graceMs: CLEANUP_GRACE_MS,
      onStart: (kill) => {
        stop = kill;
      },
    });
    done = true;
    t.log(tail(result.stdout, 20));
    t.false(result.timedOut, `hack/kind-e2e.sh still running after ${KIND_TIMEOUT_MS / 60_000} minutes`);
    t.is(result.code, 0, tail(result.stderr, 40));
    t.regex(result.stdout, /^answered: hello from web-\d hello from web-\d hello from web-\d$/m);
    t.regex(result.stdout, /^==> e2e checks passed$/m);
  },
);
