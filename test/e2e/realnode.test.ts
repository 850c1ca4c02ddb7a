// Orrery on a real Kubernetes node on this machine (hack/realnode/): kubelet, kube-proxy,
// kube-scheduler and kube-controller-manager of the control plane's release, containerd, runc and
// the CNI plugins from Debian, and images built here, joined to a local control plane in a network
// namespace of its own. `kubectl apply -k deploy/` then runs hack/e2e-checks.sh, the checks the
// kind test runs: deploy/ ready under its own RBAC and admission policies, the examples Running as
// plain processes and answering through their Service from each replica, the runtime's container
// killed and re-adopting its replicas with the same pids, and nothing left after deletion.
// Skipped, saying why, where root, containerd or the CNI plugins are missing.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { type RealNode, startRealNode, unavailable } from '../../hack/realnode/node.ts';
import { repoRoot, runScript, tail } from '../helpers/script.ts';
import { runs } from '../helpers/skip.ts';

/** The checks' own bound; past it their process group gets SIGTERM, then SIGKILL. */
const CHECKS_TIMEOUT_MS = 12 * 60_000;
/** Bring-up: images, control plane, containerd, kubelet, the node Ready (a cold build of the components is done before ava, by hack/test.ts). */
const NODE_TIMEOUT_MS = 8 * 60_000;

const reason = await unavailable();

test.runIf(runs(reason, 'real-node e2e'))(
  'a real node: deploy/ runs the examples, survives a runtime restart and leaves nothing (hack/e2e-checks.sh)',
  async (t) => {
    t.timeout(NODE_TIMEOUT_MS + CHECKS_TIMEOUT_MS + 120_000, 'the real node and hack/e2e-checks.sh');
    let node: RealNode | undefined;
    let stopChecks: (() => void) | undefined;
    let done = false;
    // Whatever ends the test (a failure, ava's timeout), the checks stop and the node goes, with
    // what deploy/'s runtime left on this machine.
    t.teardown(async () => {
      if (!done) stopChecks?.();
      await node?.stop();
    });
    const started = Date.now();
    node = await startRealNode({
      workDir: mkdtempSync(join(tmpdir(), 'orrery-realnode-')),
      log: (msg) => t.log(`[node] ${msg}`),
    });
    t.log(`node ${node.name} Ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const result = await runScript(
      'nsenter',
      [...node.nsenter, `--wd=${repoRoot}`, '--', 'bash', 'hack/e2e-checks.sh'],
      {
        timeoutMs: CHECKS_TIMEOUT_MS,
        env: { ...node.env, NODE_NAME: node.name },
        onStart: (kill) => {
          stopChecks = kill;
        },
      },
    );
    done = true;
    t.log(tail(result.stdout, 25));
    t.false(result.timedOut, `hack/e2e-checks.sh still running after ${CHECKS_TIMEOUT_MS / 60_000} minutes`);
    t.is(result.code, 0, `${tail(result.stdout, 15)}\n${tail(result.stderr, 40)}`);
    // Each replica answered through the Service, before and after the runtime's restart.
    const answers = result.stdout.match(
      /^answered: hello from web-\d hello from web-\d hello from web-\d$/gm,
    );
    t.is(answers?.length, 2);
    t.regex(result.stdout, /^same processes after the restart: (\d+ ){3,}$/m);
    t.regex(result.stdout, /^no cgroup or BPF pin of realnode-0's runtime is left$/m);
    t.regex(result.stdout, /^==> e2e checks passed$/m);
    // Where this machine has BPF and cgroup v2, deploy/'s runtime balanced in the kernel, and its
    // uninstall (above) left no pin.
    if (node.env.EXPECT_KERNEL_FASTPATH === '1') {
      t.regex(result.stdout, /^mesh data path on realnode-0: \{"kernel":true\}$/m);
    } else {
      t.log(`the kernel fast path is not expected here: ${result.stdout.match(/^mesh data path.*$/m)?.[0]}`);
    }
  },
);
