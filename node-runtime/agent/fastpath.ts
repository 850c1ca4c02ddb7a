/**
 * The kernel fast path in the host agent (`--kernel-fastpath`, off by default;
 * node-runtime/bpf/README.md): at start the BPF programs are loaded (or the pinned ones taken
 * over) and attached to the host's Orrery parent in the cgroup v2 tree, so every replica's
 * connect to a `tcp` Service port is sent to an endpoint in the kernel. The map is filled from
 * the Services and the operator's EndpointSlices, the proxy's sources; the engine's events take a
 * replica's endpoints out at its exit, before any API round trip. Without BPF or cgroup v2 it logs
 * why and does nothing: the proxy serves every port.
 */
import { mkdirSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { ENDPOINT_SLICE_MANAGER, MANAGED_BY_LABEL } from '../../crds/labels.ts';
import { ENDPOINT_SLICES } from '../../crds/resources.ts';
import { serviceKeyOfSlice, upstreamsOf } from '../../crds/slice-endpoints.ts';
import type { EndpointSlice, Service } from '../../crds/types.ts';
import { Informer, type KubeApi, objectKey, resourceClient } from '../../kube/index.ts';
import { HashRing } from '../../platform/ring-hash.ts';
import { BPFFS, fastPathUnavailable, loadSocketLb, SocketLb, unpinSocketLb } from '../bpf/index.ts';
import { KernelServiceTable, type ReplicaEndpoint } from '../bpf/service-table.ts';
import type { CgroupLayout } from '../cgroups/detect.ts';
import type { Engine, Placement } from '../engine.ts';
import type { EngineEvent } from '../supervisor/spec.ts';
import { keyOfReplicaId } from './replica-spec.ts';

type ServicePort = Service['spec']['ports'][number];

const BY_SERVICE = 'service';

/**
 * Whether a Service port is balanced in the kernel (the decision table of
 * node-runtime/bpf/README.md): `tcp` with a policy the kernel's weighted random stands for, or
 * ring-hash (see `RING_HASH_KEY`), and an IPv4 virtual IP. Everything else stays with the proxy
 * at VIP:port.
 */
export function balancedInKernel(service: Service, port: ServicePort): boolean {
  const vip = service.status?.virtualIP;
  const policy = service.spec.loadBalancer?.policy ?? 'round-robin';
  return (
    port.protocol === 'tcp' &&
    (policy === 'round-robin' || policy === 'random' || policy === 'ring-hash') &&
    vip !== undefined &&
    /^\d{1,3}(\.\d{1,3}){3}$/.test(vip)
  );
}

/**
 * What ring-hash hashes for a tcp port is the client's address, and every replica on a host
 * reaches a virtual IP (on loopback) from 127.0.0.1: the proxy's key for all of them. So the
 * kernel gets the one endpoint the same ring gives that key, recomputed when the endpoints change
 * or one goes down here (only that key moves, as on the proxy's ring): the connects go where the
 * proxy would have sent them, without its hop. A per-connection key would need a table in the map
 * (Maglev); the API's tcp ring-hash has none.
 */
export const RING_HASH_KEY = '127.0.0.1';

/** The kernel's endpoint for a ring-hash port: the ring's choice for `RING_HASH_KEY` among those up. */
export function ringHashSelection(up: readonly ReplicaEndpoint[]): readonly ReplicaEndpoint[] {
  const chosen = new HashRing(up.map((e) => ({ ...e, id: endpointId(e) }))).pick(RING_HASH_KEY);
  return chosen ? [chosen] : [];
}

/** The id the proxy's pools give an endpoint (crds/slice-endpoints.ts, Upstream.id). */
const endpointId = (e: ReplicaEndpoint) =>
  `${e.replica.slice(e.replica.indexOf('/') + 1)}@${e.address}:${e.port}`;

/** What each engine event says of its replica, for the kernel map: out, back in, or nothing. */
export function kernelEffectOf(event: EngineEvent): 'down' | 'up' | undefined {
  switch (event.type) {
    case 'exited':
    case 'stopped':
      return 'down';
    case 'notReady':
      return event.replicaReady ? undefined : 'down';
    case 'ready':
      return event.replicaReady ? 'up' : undefined;
    default:
      return undefined;
  }
}

export interface KernelFastPathOptions {
  hostName: string;
  layout: CgroupLayout;
  cgroupParent: string;
  api: KubeApi;
  fieldManager: string;
  /** The agent's Service informer (all namespaces). */
  services: Informer<Service>;
  engine: Engine;
  log: Logger;
}

export class KernelFastPath {
  readonly cgroupDir: string;
  readonly pinDir: string;
  readonly #lb: SocketLb;
  readonly #table: KernelServiceTable;
  readonly #slices: Informer<EndpointSlice>;
  readonly #services: Informer<Service>;
  readonly #engine: Engine;
  readonly #log: Logger;
  /** The VIP:ports each Service has in the table, to delete those it no longer has. */
  readonly #portsOf = new Map<string, Set<string>>();
  #synced = false;
  #stopped = false;

  /**
   * Loads (or takes over) and attaches the programs, and starts filling the map; where the fast
   * path cannot run, `off` says why (also logged).
   */
  static start(o: KernelFastPathOptions): { fastPath: KernelFastPath } | { off: string } {
    const off = (reason: string) => {
      o.log.warn({ reason }, 'kernel fast path off: the proxy serves every Service port');
      return { off: reason };
    };
    if (o.layout.v2Root === undefined) return off('no cgroup v2 tree');
    const cgroupDir = join(o.layout.v2Root, o.cgroupParent);
    // Named after the cgroup parent (`orrery/<host>` by default), which is one runtime's alone on a
    // machine; several runtimes of one host name (tests, `orrery up` in two data dirs) never share pins.
    const pinDir = join(BPFFS, o.cgroupParent);
    let lb: SocketLb | undefined;
    try {
      mkdirSync(cgroupDir, { recursive: true });
      const reason = fastPathUnavailable(cgroupDir);
      if (reason !== undefined) return off(reason);
      const loaded = loadSocketLb(pinDir);
      lb = new SocketLb(pinDir);
      lb.attach(cgroupDir);
      o.log.info(
        { cgroupDir, pinDir, loaded },
        loaded ? 'kernel fast path loaded' : 'kernel fast path taken over',
      );
      return { fastPath: new KernelFastPath(o, cgroupDir, pinDir, lb) };
    } catch (error) {
      // Programs attached with nobody to keep their map current would balance to stale
      // endpoints: detached, so that the proxy serves.
      try {
        lb?.detach(cgroupDir);
      } catch {}
      lb?.close();
      return off((error as Error).message);
    }
  }

  private constructor(o: KernelFastPathOptions, cgroupDir: string, pinDir: string, lb: SocketLb) {
    this.cgroupDir = cgroupDir;
    this.pinDir = pinDir;
    this.#lb = lb;
    this.#table = new KernelServiceTable(lb, lb.servicePorts());
    this.#services = o.services;
    this.#engine = o.engine;
    this.#log = o.log;
    this.#slices = new Informer<EndpointSlice>(resourceClient(o.api, ENDPOINT_SLICES, o.fieldManager), {
      log: o.log,
      name: 'endpointslices',
      labelSelector: `${MANAGED_BY_LABEL}=${ENDPOINT_SLICE_MANAGER}`,
      backoffMaxMs: 2000,
    });
    this.#slices.addIndex(BY_SERVICE, (s) => serviceKeyOfSlice(s));
    const bySlice = (slice: EndpointSlice) => {
      const key = serviceKeyOfSlice(slice);
      if (key) this.#sync(key);
    };
    this.#slices.addHandlers({ add: bySlice, update: (_old, s) => bySlice(s), delete: bySlice });
    const byService = (s: Service) => this.#sync(objectKey(s));
    this.#services.addHandlers({ add: byService, update: (_old, s) => byService(s), delete: byService });
    this.#engine.on('event', this.#onEvent);
    this.#engine.on('placed', this.#onPlaced);
    this.#engine.on('unplaced', this.#onUnplaced);
    this.#guardPorts();
    this.#slices.start();
    void Promise.all([this.#services.waitForSync(), this.#slices.waitForSync()]).then(
      () => {
        this.#synced = true;
        for (const key of this.#services.keys()) this.#sync(key);
        const stale = this.#table.deleteStale();
        this.#log.info({ ports: this.#table.ports().length, stale }, 'kernel fast path synced');
      },
      () => {}, // stopped before the caches synced
    );
  }

  /** Brings the map in line with one Service and its slices (only once both caches are complete). */
  #sync(serviceKey: string): void {
    if (!this.#synced) return;
    try {
      const service = this.#services.get(serviceKey);
      const slices = this.#slices.byIndex(BY_SERVICE, serviceKey);
      const namespace = serviceKey.slice(0, serviceKey.indexOf('/'));
      const now = new Set<string>();
      for (const port of service?.spec.ports ?? []) {
        if (!service || !balancedInKernel(service, port)) continue;
        const vip = service.status?.virtualIP as string;
        const endpoints = upstreamsOf(slices, port.name)
          .filter((u) => u.ready)
          .map((u) => ({
            replica: `${namespace}/${u.replica}`,
            address: u.address,
            port: u.port,
            weight: 1,
          }));
        const ringHash = service.spec.loadBalancer?.policy === 'ring-hash';
        this.#table.setPort(vip, port.port, endpoints, ringHash ? ringHashSelection : undefined);
        now.add(`${vip}:${port.port}`);
      }
      for (const key of this.#portsOf.get(serviceKey) ?? []) {
        if (now.has(key)) continue;
        const colon = key.lastIndexOf(':');
        this.#table.deletePort(key.slice(0, colon), Number(key.slice(colon + 1)));
      }
      if (now.size > 0) this.#portsOf.set(serviceKey, now);
      else this.#portsOf.delete(serviceKey);
    } catch (error) {
      this.#log.error(
        { service: serviceKey, err: (error as Error).message },
        'kernel fast path: map update failed',
      );
    }
  }

  readonly #onEvent = (event: EngineEvent): void => {
    const effect = kernelEffectOf(event);
    const replica = effect && keyOfReplicaId(event.replica);
    if (!replica) return;
    try {
      if (effect === 'down') this.#table.replicaDown(replica);
      else this.#table.replicaUp(replica);
    } catch (error) {
      this.#log.error({ replica, err: (error as Error).message }, 'kernel fast path: map update failed');
    }
  };

  /**
   * Each running replica's ports to its cgroup (the bind programs refuse other replicas' binds of
   * them), and no entry for a port no replica has: what a previous agent left for replicas that
   * were deleted while no agent ran.
   */
  #guardPorts(): void {
    try {
      const wanted = new Map<number, bigint>();
      for (const p of this.#engine.placements()) {
        if (p.cgroupId === undefined) continue;
        for (const port of p.ports) if (!wanted.has(port)) wanted.set(port, p.cgroupId);
      }
      const have = this.#lb.portOwners();
      for (const [port, owner] of wanted) if (have.get(port) !== owner) this.#lb.setPortOwner(port, owner);
      for (const port of have.keys()) if (!wanted.has(port)) this.#lb.deletePortOwner(port);
    } catch (error) {
      this.#log.error({ err: (error as Error).message }, 'kernel fast path: port guard update failed');
    }
  }

  readonly #onPlaced = (p: Placement): void => {
    if (p.cgroupId === undefined) return;
    try {
      for (const port of p.ports) this.#lb.setPortOwner(port, p.cgroupId);
    } catch (error) {
      this.#log.error(
        { replica: p.replica, err: (error as Error).message },
        'kernel fast path: port guard update failed',
      );
    }
  };

  readonly #onUnplaced = (p: Placement): void => {
    if (p.cgroupId === undefined) return;
    try {
      for (const port of p.ports) if (this.#lb.portOwner(port) === p.cgroupId) this.#lb.deletePortOwner(port);
    } catch (error) {
      this.#log.error(
        { replica: p.replica, err: (error as Error).message },
        'kernel fast path: port guard update failed',
      );
    }
  };

  /** The kernel's counts of rewritten and refused connects, and of refused binds. */
  counters(): { rewritten: number; refused: number; bindRefused: number } {
    return this.#lb.counters();
  }

  /** Stops following the sources; the programs stay attached and the map as it is (an agent restart takes them over). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#engine.off('event', this.#onEvent);
    this.#engine.off('placed', this.#onPlaced);
    this.#engine.off('unplaced', this.#onUnplaced);
    this.#slices.stop();
  }

  /** Stops, then detaches the programs and removes the pins (`orrery up` stopping, uninstall). */
  unload(): void {
    this.stop();
    this.#lb.detach(this.cgroupDir);
    this.#lb.close();
    unpinSocketLb(this.pinDir);
    try {
      rmdirSync(dirname(this.pinDir)); // <bpffs>/orrery, once no other host's agent pins there
    } catch {}
    this.#log.info({ cgroupDir: this.cgroupDir, pinDir: this.pinDir }, 'kernel fast path unloaded');
  }
}
