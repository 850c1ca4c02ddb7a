// How the TUI reaches the hosts' runtimes: a replica's host and its runtime's endpoint from the
// informers' caches (Replica spec.host → Host status.apiEndpoint), the token as every runtime
// client finds it (platform/runtime-api.ts: flag, $ORRERY_RUNTIME_TOKEN, file, state dir), read
// once per host while it works.
import {
  type HostTarget,
  hostTarget,
  type RuntimeTokenSource,
  readLogs,
  readRuntimeToken,
  runtimeGet,
} from '../../platform/runtime-api.ts';
import type { RuntimeAccess } from './logs.ts';
import type { ClusterReader } from './views.ts';

export class RuntimeClients implements RuntimeAccess {
  readonly #cluster: ClusterReader;
  readonly #source: RuntimeTokenSource;
  readonly #tokens = new Map<string, Promise<string>>();

  constructor(cluster: ClusterReader, source: RuntimeTokenSource) {
    this.#cluster = cluster;
    this.#source = source;
  }

  /** The hosts whose runtime publishes an endpoint, as the cache has them. */
  hosts(): HostTarget[] {
    return this.#cluster.list('hosts').flatMap((h) => hostTarget(h) ?? []);
  }

  /** The host's token; a failed read is tried again next time (the runtime may write it later). */
  token(host: string): Promise<string> {
    let token = this.#tokens.get(host);
    if (!token) {
      token = readRuntimeToken(host, this.#source);
      token.catch(() => this.#tokens.delete(host));
      this.#tokens.set(host, token);
    }
    return token;
  }

  async locate(namespace: string, replica: string): Promise<{ target: HostTarget; token: string }> {
    const rep = this.#cluster.get('replicas', `${namespace}/${replica}`);
    if (!rep) throw new Error(`replica ${namespace}/${replica} is gone`);
    const hostName = rep.spec?.host;
    if (!hostName) throw new Error(`replica ${namespace}/${replica} is not bound to a host yet (Pending)`);
    const host = this.#cluster.get('hosts', hostName);
    const target = host && hostTarget(host);
    if (!target) throw new Error(`host ${hostName} has no status.apiEndpoint: is its runtime running?`);
    return { target, token: await this.token(hostName) };
  }

  readLogs = readLogs;

  /** The pid of a process's current run, from its runtime (`GET /v1/replicas/:ns/:name`). */
  async processPid(
    target: HostTarget,
    token: string,
    q: { namespace: string; replica: string; process?: string | undefined },
    signal: AbortSignal,
  ): Promise<number | null> {
    const path = `/v1/replicas/${encodeURIComponent(q.namespace)}/${encodeURIComponent(q.replica)}`;
    const body = (await (await runtimeGet(target, token, path, signal)).json()) as {
      status?: { processes?: { name?: string; pid?: number | null }[] };
    };
    const processes = body.status?.processes ?? [];
    const p = q.process === undefined ? processes[0] : processes.find((x) => x.name === q.process);
    return typeof p?.pid === 'number' ? p.pid : null;
  }
}
