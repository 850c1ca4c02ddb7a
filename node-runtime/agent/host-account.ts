/**
 * The host's own reads of ConfigMaps and Secrets (docs/DESIGN.md §10, issue 19): not with the
 * runtime's credentials, which every host shares and which may read none, but as the host's own
 * ServiceAccount `orrery-system/orrery-host-<host>`, which the operator keeps and grants, per
 * namespace, `get` on exactly the objects the Replicas bound to this host reference. So the API
 * server itself refuses this host a Secret only another host's replicas use.
 *
 * Its token comes from the TokenRequest API (`serviceaccounts/token`), asked with the runtime's
 * own credentials: deploy/rbac.yaml lets the runtime account ask, and its admission policy
 * `orrery-runtime-host-account` holds it to the account named after its own node. A token lives
 * an hour and is asked again when a fifth of that is left, or at once after a 401.
 */
import type { Logger } from 'pino';
import { hostAccountName, SYSTEM_NAMESPACE } from '../../crds/labels.ts';
import {
  CONFIGMAPS,
  isForbidden,
  isNotFound,
  isUnauthorized,
  KubeApi,
  KubeConfig,
  type KubeObject,
  type ResourceDescriptor,
  resourceClient,
  SECRETS,
} from '../../kube/index.ts';
import { ConfigAccessError, type ConfigKind, type ConfigObjects } from './config-env.ts';

/** What the token is asked for, in seconds: an hour, the API server's default for a TokenRequest. */
export const HOST_TOKEN_SECONDS = 3600;

interface Token {
  api: KubeApi;
  /** performance.now() after which a new token is asked. */
  renewAt: number;
}

type DataObject = KubeObject & { data?: Record<string, string>; binaryData?: Record<string, string> };

export class HostAccountReader implements ConfigObjects {
  readonly #api: KubeApi;
  readonly #host: string;
  readonly #log: Logger;
  #token: Promise<Token> | undefined;

  /** `api`: the runtime's own client, which asks for the tokens. */
  constructor(api: KubeApi, host: string, log: Logger) {
    this.#api = api;
    this.#host = host;
    this.#log = log;
  }

  get account(): string {
    return `${SYSTEM_NAMESPACE}/${hostAccountName(this.#host)}`;
  }

  async data(kind: ConfigKind, namespace: string, name: string): Promise<Record<string, string> | undefined> {
    const object = await this.#get(kind, namespace, name);
    if (!object) return undefined;
    const data = object.data ?? {};
    if (kind === 'ConfigMap') return { ...data };
    return Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
    );
  }

  async #get(kind: ConfigKind, namespace: string, name: string): Promise<DataObject | undefined> {
    for (let attempt = 0; ; attempt++) {
      const { api } = await this.#current();
      const client = resourceClient<DataObject>(
        api,
        (kind === 'Secret' ? SECRETS : CONFIGMAPS) as ResourceDescriptor<DataObject>,
        'orrery-runtime',
      );
      try {
        return await client.get(name, { namespace });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        if (isUnauthorized(err) && attempt === 0) {
          // Expired or revoked (its ServiceAccount made again): a new token, once.
          this.#drop();
          continue;
        }
        if (isForbidden(err)) {
          throw new ConfigAccessError(
            `${kind === 'Secret' ? 'secret' : 'configmap'} "${name}" is not readable by ${this.account} yet (the operator grants each host the objects its replicas reference)`,
            { cause: err },
          );
        }
        throw err;
      }
    }
  }

  /**
   * An object's keys as file contents (a ConfigMap's data and binaryData, a Secret's data decoded),
   * or undefined when it does not exist.
   */
  async files(
    kind: ConfigKind,
    namespace: string,
    name: string,
  ): Promise<Record<string, Buffer> | undefined> {
    const object = await this.#get(kind, namespace, name);
    if (!object) return undefined;
    const out: Record<string, Buffer> = {};
    if (kind === 'ConfigMap') {
      for (const [k, v] of Object.entries(object.data ?? {})) out[k] = Buffer.from(v, 'utf8');
      for (const [k, v] of Object.entries(object.binaryData ?? {})) out[k] = Buffer.from(v, 'base64');
    } else {
      for (const [k, v] of Object.entries(object.data ?? {})) out[k] = Buffer.from(v, 'base64');
    }
    return out;
  }

  close(): void {
    this.#drop();
  }

  #drop(): void {
    const old = this.#token;
    this.#token = undefined;
    void old?.then((t) => t.api.close()).catch(() => {});
  }

  #current(): Promise<Token> {
    const cached = this.#token;
    if (cached) {
      return cached.then((t) => {
        if (performance.now() < t.renewAt) return t;
        if (this.#token === cached) this.#drop();
        return this.#current();
      });
    }
    const next = this.#request();
    this.#token = next;
    // A failed request is not cached: the next read asks again.
    next.catch(() => {
      if (this.#token === next) this.#token = undefined;
    });
    return next;
  }

  async #request(): Promise<Token> {
    const account = hostAccountName(this.#host);
    const t0 = performance.now();
    let answer: { status: { token: string } };
    try {
      answer = await this.#api.request<{ status: { token: string } }>({
        method: 'POST',
        path: `/api/v1/namespaces/${SYSTEM_NAMESPACE}/serviceaccounts/${account}/token`,
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: { expirationSeconds: HOST_TOKEN_SECONDS },
        },
      });
    } catch (err) {
      if (isNotFound(err)) {
        throw new ConfigAccessError(
          `the ServiceAccount ${this.account} does not exist yet (the operator makes one for each Host)`,
          { cause: err },
        );
      }
      if (isForbidden(err)) {
        throw new ConfigAccessError(
          `the runtime may not ask for a token of ${this.account}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      throw err;
    }
    const kc = this.#api.kubeConfig;
    const source = 'orrery-runtime host account';
    // The cluster of the runtime's kubeconfig, and no credentials but this token: a client
    // certificate sent beside it would win, and the reads would be the runtime's.
    const api = await KubeApi.fromKubeConfig(
      new KubeConfig([
        {
          source,
          clusters: [{ ...kc.cluster, name: 'cluster' }],
          users: [{ name: account, source, token: answer.status.token }],
          contexts: [{ name: account, source, cluster: 'cluster', user: account }],
          currentContext: account,
        },
      ]),
      { maxSockets: 8 },
    );
    this.#log.debug(
      { account: this.account, ms: Math.round(performance.now() - t0) },
      'host account token issued',
    );
    return { api, renewAt: t0 + HOST_TOKEN_SECONDS * 1000 * 0.8 };
  }
}
