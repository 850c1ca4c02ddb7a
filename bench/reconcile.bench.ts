/**
 * One reconcile's cost as the operator's cache grows (docs/DESIGN.md §9): each controller's
 * reconcile of one steady object (nothing left to write) timed with 10 and then with 10,000
 * Replicas in the informer cache, on a private local control plane. The controllers find what
 * they need through informer indexes (operator/context.ts), so the cost must stay flat: the
 * baseline is the 10-Replica cache of the same run, and the benchmark fails when a reconcile costs
 * more than MAX_RATIO times that (a scan of the whole cache would cost hundreds of times more).
 *
 * The objects: an Instance of 10 Replicas (created unbound by its controller: no scheduler runs
 * here), a Service selecting them, a Replica no host can fit (the scheduler's steady state is
 * "still unschedulable", which writes nothing), and a Host whose Lease is fresh. The background
 * Replicas are in another namespace, spread over BACKGROUND_HOSTS host names.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startControlPlane } from '../controlplane/controlplane.ts';
import { installCrds } from '../crds/install.ts';
import { hostLeaseName, SYSTEM_NAMESPACE } from '../crds/labels.ts';
import { HOSTS, INSTANCES, REPLICAS, SERVICES } from '../crds/resources.ts';
import type { Host, Instance, Replica, Service } from '../crds/types.ts';
import {
  KubeApi,
  leaseClient,
  loadKubeConfig,
  microTime,
  NAMESPACES,
  resourceClient,
  typed,
  WorkQueue,
} from '../kube/index.ts';
import { allInformers, type Controller, createContext } from '../operator/context.ts';
import { hostController, LeaseObserver } from '../operator/hosts/controller.ts';
import { instanceController } from '../operator/instance/controller.ts';
import { SchedulerCache, schedulerController } from '../operator/scheduler/controller.ts';
import { serviceController } from '../operator/service/controller.ts';
import { parseCidr } from '../operator/service/vip.ts';
import { forEachLimited } from '../platform/concurrency.ts';
import { summarize } from './stats.ts';

const SMALL = 10;
const LARGE = Number(process.env.ORRERY_BENCH_RECONCILE_REPLICAS ?? 10_000);
const BACKGROUND_HOSTS = 100;
const ROUNDS = 400;
const WARMUP = 50;
/** A reconcile may cost this many times its cost with the small cache, no more. */
const MAX_RATIO = 3;
const CREATE_CONCURRENCY = 64;

const progress = (message: string) => console.error(`[reconcile] ${message}`);

export default async function reconcileBench(): Promise<{ title: string; markdown: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'orrery-bench-reconcile-'));
  const plane = await startControlPlane({ dataDir });
  const kubeConfig = loadKubeConfig({ kubeconfig: plane.kubeconfig });
  await installCrds(kubeConfig);
  const api = await KubeApi.fromKubeConfig(kubeConfig);
  const ctx = createContext(api, pino({ level: 'silent' }));
  const cleanups: (() => void)[] = [];
  try {
    const replicas = resourceClient(api, typed<Replica>(REPLICAS), 'bench');
    for (const name of ['subject', 'background', SYSTEM_NAMESPACE]) {
      await resourceClient(api, NAMESPACES, 'bench').create({
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name },
      });
    }
    await createSubjects(api);
    let background = 0;
    const addBackground = async (upTo: number) => {
      const names = Array.from({ length: upTo - background }, (_, i) => background + i);
      await forEachLimited(names, CREATE_CONCURRENCY, async (i) => {
        await replicas.create(backgroundReplica(i), { namespace: 'background' });
      });
      background = upTo;
    };
    await addBackground(SMALL);

    const leases = new LeaseObserver();
    leases.watch(ctx.informers.leases);
    const controllers: Controller[] = [
      instanceController(ctx),
      schedulerController(ctx, { cache: new SchedulerCache(), leases }),
      hostController(ctx, { graceMs: 1000, leases }),
      serviceController(ctx, { range: parseCidr('127.77.0.0/16') }),
    ];
    // The watches feed the scheduler's cache and the Instance controller's expectations; nothing
    // drains the queues: the reconciles below are called directly.
    const queues = controllers.map((c) => {
      const queue = new WorkQueue<string>({ name: c.name });
      c.watch(queue);
      return queue;
    });
    cleanups.push(() => {
      for (const q of queues) q.shutdown();
    });
    const subjectKeys: Record<string, string> = {
      instances: 'subject/web',
      scheduler: 'subject/huge-0',
      hosts: 'subject-host',
      services: 'subject/web',
    };
    for (const informer of allInformers(ctx)) informer.start();
    await Promise.all(allInformers(ctx).map((i) => i.waitForSync()));

    const cacheHolds = async (n: number) => {
      const deadline = Date.now() + 120_000;
      while (ctx.informers.replicas.keys().length < n) {
        if (Date.now() > deadline) throw new Error(`the cache never reached ${n} Replicas`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    // Converge: the Instance creates its Replicas and writes its status; the Service and the
    // unschedulable Replica get their status; then every reconcile of these keys writes nothing.
    const converge = async () => {
      for (let round = 0; round < 20; round++) {
        for (const c of controllers) await c.reconcile(subjectKeys[c.name] as string);
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    const measure = async () => {
      const out: Record<string, number[]> = {};
      for (const c of controllers) {
        const key = subjectKeys[c.name] as string;
        const samples: number[] = [];
        for (let i = 0; i < ROUNDS + WARMUP; i++) {
          const t0 = performance.now();
          await c.reconcile(key);
          if (i >= WARMUP) samples.push((performance.now() - t0) * 1000);
        }
        out[c.name] = samples;
      }
      return out;
    };

    await cacheHolds(SMALL + 1); // the background and the unschedulable one
    await converge();
    const small = await measure();
    const smallCache = ctx.informers.replicas.keys().length;
    progress(`${smallCache} Replicas in the cache: measured; creating ${LARGE - SMALL} more`);
    await addBackground(LARGE);
    await cacheHolds(LARGE + 11);
    await converge();
    const large = await measure();
    const largeCache = ctx.informers.replicas.keys().length;
    progress(`${largeCache} Replicas in the cache: measured`);

    const rows: string[] = [];
    const tooSlow: string[] = [];
    for (const c of controllers) {
      const s = summarize(small[c.name] as number[]);
      const l = summarize(large[c.name] as number[]);
      const ratio = l.p50 / s.p50;
      if (ratio > MAX_RATIO) tooSlow.push(`${c.name} ${ratio.toFixed(2)}×`);
      rows.push(
        `| ${c.name} | ${s.p50.toFixed(1)} / ${s.p99.toFixed(1)} | ${l.p50.toFixed(1)} / ${l.p99.toFixed(1)} | ${ratio.toFixed(2)}× | ≤ ${MAX_RATIO}× | ${ratio <= MAX_RATIO ? 'met' : 'not met'} |`,
      );
    }
    const markdown = [
      `One reconcile of a steady object (no write left to make), p50 / p99 in µs over ${ROUNDS} reconciles, with ${smallCache} and with ${largeCache} Replicas in the operator's cache (private local control plane; the background Replicas in another namespace on ${BACKGROUND_HOSTS} hosts).`,
      '',
      `| controller | ${smallCache} Replicas | ${largeCache} Replicas | ratio (p50) | target | |`,
      '|---|---|---|---|---|---|',
      ...rows,
    ].join('\n');
    if (tooSlow.length > 0) {
      console.log(markdown);
      throw new Error(`reconcile cost grows with the cache: ${tooSlow.join(', ')}`);
    }
    return { title: 'Reconcile cost against cache size', markdown };
  } finally {
    for (const c of cleanups) c();
    await Promise.all(allInformers(ctx).map((i) => i.stop()));
    api.close();
    await plane.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const template = (cpu: string) => ({
  processes: [{ name: 'main', command: ['sleep', 'infinity'] }],
  resources: { cpu },
});

function backgroundReplica(i: number): Replica {
  const instance = `bg-${Math.floor(i / 10)}`;
  const host = `bg-host-${i % BACKGROUND_HOSTS}`;
  return {
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Replica',
    metadata: {
      name: `${instance}-${i % 10}`,
      labels: { 'orrery.dev/instance': instance, 'orrery.dev/host': host, app: 'web' },
    },
    spec: { instance, ordinal: i % 10, host, template: template('10m') },
  } as unknown as Replica;
}

async function createSubjects(api: KubeApi): Promise<void> {
  const now = microTime();
  await resourceClient(api, typed<Instance>(INSTANCES), 'bench').create(
    {
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Instance',
      metadata: { name: 'web' },
      spec: { replicas: 10, template: { metadata: { labels: { app: 'web' } }, ...template('10m') } },
    } as unknown as Instance,
    { namespace: 'subject' },
  );
  await resourceClient(api, typed<Service>(SERVICES), 'bench').create(
    {
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Service',
      metadata: { name: 'web' },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    } as unknown as Service,
    { namespace: 'subject' },
  );
  await resourceClient(api, typed<Replica>(REPLICAS), 'bench').create(
    {
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Replica',
      metadata: { name: 'huge-0', labels: { 'orrery.dev/instance': 'huge' } },
      spec: { instance: 'huge', ordinal: 0, template: template('100000') },
    } as unknown as Replica,
    { namespace: 'subject' },
  );
  await resourceClient(api, typed<Host>(HOSTS), 'bench').create({
    apiVersion: 'orrery.dev/v1alpha1',
    kind: 'Host',
    metadata: { name: 'subject-host' },
    spec: {},
  } as unknown as Host);
  await leaseClient(api, 'bench').create(
    {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: hostLeaseName('subject-host') },
      spec: { holderIdentity: 'subject-host', leaseDurationSeconds: 3600, renewTime: now, acquireTime: now },
    },
    { namespace: SYSTEM_NAMESPACE },
  );
}
