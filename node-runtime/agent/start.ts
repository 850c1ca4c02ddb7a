import path from 'node:path';
/**
 * The host agent's start. Re-adoption comes first and alone: the engine reopens every process
 * recorded in its run dir (pidfd_open and a start-time check of each, its cgroup found again),
 * which needs the disk and the kernel, not the API server. So the replicas are supervised again
 * before anything that talks to the API server is even loaded. agent.ts, loaded after, joins the
 * cluster, and stops or runs nothing for the API's sake until its Replica informer has synced: a
 * replica deleted while the agent was down keeps running until then.
 */
import type { Logger } from 'pino';
import { newLogger } from '../../platform/log.ts';
import { privateDir } from '../../platform/private-fs.ts';
import { Engine } from '../engine.ts';
import type { Agent } from './agent.ts';
import { type AgentOptions, normalizeAgentOptions } from './options.ts';
import { workloadCaps } from './reserve.ts';

/** Logged once the engine supervises every recorded replica again, before any API call. */
export const READOPTED_MESSAGE = 'replicas re-adopted';

export async function startAgent(options: AgentOptions = {}): Promise<Agent> {
  const o = normalizeAgentOptions(options);
  // Synchronous, as the kubelet's klog: a line is out when it is logged. pino's default writes
  // from libuv's thread pool, one write after the other, each issued from the event loop, which
  // loading agent.ts below keeps busy; and a killed agent loses no line.
  const root: Logger = options.log ?? newLogger('orrery-runtime', { sync: true });
  const log = root.child({ host: o.hostName });
  // 0700 from their creation, and tightened when they exist looser (mkdir's mode applies only when it creates).
  for (const dir of [o.stateDir, o.runDir, o.logDir]) privateDir(dir);
  const engine = new Engine({
    stateDir: o.runDir,
    logDir: o.logDir,
    cgroupParent: o.cgroupParent,
    log,
    logRotation: { maxBytes: o.logMaxBytes, maxFiles: o.logMaxFiles },
    defaultResources: o.defaultResources,
    parentLimits: workloadCaps(o.capacity),
    // Its API token is in the state dir; in a pod, the service account's token is readable by any uid.
    maskPaths: [o.stateDir, '/var/run/secrets/kubernetes.io'],
    ...(o.workloadRoot !== undefined ? { workloadRoot: o.workloadRoot } : {}),
    // Disk emptyDirs on the state dir's disk, not the run dir's tmpfs (volumes/manager.ts).
    volumeDir: path.join(o.stateDir, 'volumes'),
  });
  const t0 = performance.now();
  await engine.start();
  const readopted = {
    replicas: engine.list().length,
    ms: Math.round((performance.now() - t0) * 10) / 10,
    // performance.now() counts from the start of this process: exec → re-adopted, as the agent sees it.
    sinceProcessStartMs: Math.round(performance.now()),
  };
  log.info(readopted, READOPTED_MESSAGE);
  try {
    // `orrery up` has it compiled ahead with the rest (cli/daemons.ts).
    const { joinCluster } = await import('./agent.ts');
    return await joinCluster({ options: o, log, engine, readopted });
  } catch (err) {
    // The workloads keep running, detached, for the next start to re-adopt.
    await engine.close().catch(() => {});
    throw err;
  }
}
