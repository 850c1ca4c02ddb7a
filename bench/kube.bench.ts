/**
 * The kube/ layer's share of docs/DESIGN.md §9 "kubectl apply → Replica Running (p50 ≤ 50 ms)": how long
 * a write takes through KubeApi and how long until an informer's handler sees it, against the
 * local control plane (kube-apiserver + embedded etcd). Baseline in the same run:
 * @kubernetes/client-node 1.4's generated CoreV1Api (create) and its ListWatch informer (event).
 * Also the in-process work queue: add → get → done round trips per second.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig, makeInformer, type V1ConfigMap } from '@kubernetes/client-node';
import { startControlPlane } from '../controlplane/controlplane.ts';
import { KubeApi } from '../kube/api.ts';
import { loadKubeConfig } from '../kube/config.ts';
import { Informer } from '../kube/informer.ts';
import { ItemExponentialRateLimiter } from '../kube/ratelimit.ts';
import { CONFIGMAPS, ResourceClient } from '../kube/resources.ts';
import { WorkQueue } from '../kube/workqueue.ts';
import { summarize } from './stats.ts';

const ROUNDS = 200;
const WARMUP = 20;
/** The whole apply → Running budget; the API round trips here are only part of it. */
const TARGET_P50_MS = 50;

/** p50 and p99 without the warm-up rounds. */
const quantiles = (samples: number[]) => summarize(samples.slice(WARMUP));

/** create() latency and create → handler latency, one object at a time. */
async function measure(
  label: string,
  create: (name: string) => Promise<unknown>,
  onAdd: (cb: (name: string) => void) => void,
): Promise<{ label: string; create: number[]; event: number[] }> {
  const waiting = new Map<string, (t: number) => void>();
  onAdd((name) => waiting.get(name)?.(performance.now()));
  const createMs: number[] = [];
  const eventMs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const name = `${label}-${i}`;
    const seen = new Promise<number>((resolve) => waiting.set(name, resolve));
    const t0 = performance.now();
    await create(name);
    createMs.push(performance.now() - t0);
    eventMs.push((await seen) - t0);
    waiting.delete(name);
  }
  return { label, create: createMs, event: eventMs };
}

export default async function kubeBench(): Promise<{ title: string; markdown: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'orrery-bench-kube-'));
  const plane = await startControlPlane({ dataDir });
  const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig: plane.kubeconfig }));
  try {
    const ns = 'default';
    const cms = new ResourceClient(api, CONFIGMAPS, { fieldManager: 'bench' });
    const informer = new Informer(cms, { namespace: ns, labelSelector: 'bench=orrery' });
    informer.start();
    await informer.waitForSync({ timeoutMs: 30_000 });
    const ours = await measure(
      'orrery',
      (name) => cms.create({ metadata: { name, namespace: ns, labels: { bench: 'orrery' } } }),
      (cb) => informer.addHandlers({ add: (o) => cb(o.metadata?.name as string) }),
    );
    await informer.stop();

    const kc = new KubeConfig();
    kc.loadFromFile(plane.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const cnInformer = makeInformer<V1ConfigMap>(
      kc,
      `/api/v1/namespaces/${ns}/configmaps`,
      () => core.listNamespacedConfigMap({ namespace: ns, labelSelector: 'bench=client-node' }),
      'bench=client-node',
    );
    await cnInformer.start();
    const baseline = await measure(
      'clientnode',
      (name) =>
        core.createNamespacedConfigMap({
          namespace: ns,
          body: { metadata: { name, labels: { bench: 'client-node' } } },
        }),
      (cb) => cnInformer.on('add', (o) => cb(o.metadata?.name as string)),
    );
    await cnInformer.stop();

    // Work queue: add → get → done, one key at a time and a batch of distinct keys.
    const q = new WorkQueue<string>({ rateLimiter: new ItemExponentialRateLimiter<string>() });
    const N = 200_000;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      q.add(`k${i % 1000}`);
      const k = (await q.get()) as string;
      q.done(k);
    }
    const queueOpsPerSec = N / ((performance.now() - t0) / 1000);
    q.shutdown();

    const o = { c: quantiles(ours.create), e: quantiles(ours.event) };
    const b = { c: quantiles(baseline.create), e: quantiles(baseline.event) };
    const f = (n: number) => n.toFixed(2);
    const markdown = [
      `${ROUNDS} ConfigMaps created one at a time (first ${WARMUP} dropped), local control plane, same run.`,
      '',
      '| what | kube/ p50 ms | kube/ p99 ms | client-node p50 ms | client-node p99 ms | ratio p50 (kube/ ÷ client-node) | share of the 50 ms apply→Running target (p50) |',
      '|---|---|---|---|---|---|---|',
      `| create (POST round trip) | ${f(o.c.p50)} | ${f(o.c.p99)} | ${f(b.c.p50)} | ${f(b.c.p99)} | ${f(o.c.p50 / b.c.p50)} | ${((o.c.p50 / TARGET_P50_MS) * 100).toFixed(1)} % |`,
      `| create → informer add handler | ${f(o.e.p50)} | ${f(o.e.p99)} | ${f(b.e.p50)} | ${f(b.e.p99)} | ${f(o.e.p50 / b.e.p50)} | ${((o.e.p50 / TARGET_P50_MS) * 100).toFixed(1)} % |`,
      '',
      `Work queue: ${Math.round(queueOpsPerSec).toLocaleString('en')} add → get → done round trips per second (one key in flight).`,
    ].join('\n');
    return { title: 'kube/: API round trip and informer latency', markdown };
  } finally {
    api.close();
    await plane.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = await kubeBench();
  console.log(`## ${result.title}\n\n${result.markdown}`);
}
