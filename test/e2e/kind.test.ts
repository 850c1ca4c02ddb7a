// Orrery on a real Kubernetes cluster (kind): hack/kind-e2e.sh builds the image, creates the
// cluster, installs deploy/ and runs examples/hello.yaml to Running. It needs a Docker engine and
// the kind binary; where either is missing the test is skipped and says why.
import { spawnSync } from 'node:child_process';
import test from 'ava';

function missing(): string | undefined {
  if (spawnSync('kind', ['version'], { encoding: 'utf8' }).status !== 0)
    return 'the kind binary is not on PATH';
  const docker = spawnSync('docker', ['info'], { encoding: 'utf8' });
  if (docker.status !== 0)
    return `no Docker engine answers (docker info: ${(docker.stderr || docker.error?.message || '').trim().split('\n')[0]})`;
  return undefined;
}

const reason = missing();
if (reason) console.log(`kind e2e skipped: ${reason}`);

(reason ? test.skip : test)('kubectl apply -k deploy/ on kind runs hello to Running', (t) => {
  const result = spawnSync('bash', ['hack/kind-e2e.sh'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 20 * 60_000,
  });
  t.log(result.stdout.split('\n').slice(-20).join('\n'));
  t.is(result.status, 0, result.stderr.split('\n').slice(-40).join('\n'));
});
