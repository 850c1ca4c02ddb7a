import type { Agent, AgentOptions, ClientRequest } from 'node:http';
import { http, https } from '../platform/http.ts';
import { linkedAbort } from './backoff.ts';
import { type Credentials, credentialsFor } from './credentials.ts';
import { KubeApiError, type KubeStatus } from './errors.ts';
import type { KubeConfig } from './kubeconfig.ts';

/**
 * Raw JSON transport to the API server: one keep-alive agent per connection target, TLS
 * material and credentials taken from the KubeConfig (credentials.ts: client certificates,
 * bearer tokens and token files, basic auth; exec/auth-provider plugins through client-node).
 * Everything in kube/ goes through here so there is exactly one HTTP stack, and watches share
 * it with ordinary requests.
 */

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  query?: Query | undefined;
  body?: unknown;
  /** Content type for the body; JSON by default. Patches set theirs. */
  contentType?: string | undefined;
  /** Per-request timeout; default 30 s (client-go's default for non-watch requests is none, kubectl's 0; we prefer bounded). */
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface WatchStreamOptions {
  path: string;
  query?: Query | undefined;
  signal?: AbortSignal | undefined;
  /**
   * Abort the stream if no bytes (events or bookmarks) arrive for this long: a silently dead
   * connection (a NAT dropped it, the server froze) otherwise hangs forever.
   */
  idleTimeoutMs?: number | undefined;
  /** Called once the server answered 200 and the stream is open. */
  onOpen?: () => void;
  onEvent: (event: { type: string; object: unknown }) => void;
}

export class WatchIdleError extends Error {
  override readonly name = 'WatchIdleError';
}

export class KubeApi {
  readonly server: URL;
  readonly kubeConfig: KubeConfig;
  readonly #agent: Agent;
  readonly #watchAgent: Agent;
  readonly #isHttps: boolean;
  readonly #credentials: Credentials;

  private constructor(
    kc: KubeConfig,
    server: URL,
    agents: { request: Agent; watch: Agent },
    credentials: Credentials,
  ) {
    this.kubeConfig = kc;
    this.server = server;
    this.#agent = agents.request;
    this.#watchAgent = agents.watch;
    this.#isHttps = server.protocol === 'https:';
    this.#credentials = credentials;
  }

  /**
   * `maxSockets` bounds concurrent ordinary requests (default 64): a burst of thousands of writes
   * queues in the agent instead of opening thousands of TLS connections. Watches use their own
   * unbounded agent, so long-lived streams never starve requests or the other way round.
   */
  static async fromKubeConfig(kc: KubeConfig, options: { maxSockets?: number } = {}): Promise<KubeApi> {
    const maxSockets = options.maxSockets ?? 64;
    if (!(Number.isInteger(maxSockets) && maxSockets > 0)) {
      throw new TypeError(`maxSockets must be a positive integer, got ${options.maxSockets}`);
    }
    const server = new URL(kc.cluster.server);
    const credentials = await credentialsFor(kc);
    const tls = credentials.tls;
    const make = (extra: AgentOptions) => {
      const agentOptions = { keepAlive: true, keepAliveMsecs: 15_000, ...extra };
      return server.protocol === 'https:'
        ? new https.Agent({ ...agentOptions, ...tls })
        : new http.Agent(agentOptions);
    };
    const agents = {
      request: make({ maxSockets, maxFreeSockets: maxSockets }),
      watch: make({ maxFreeSockets: 16 }),
    };
    return new KubeApi(kc, server, agents, credentials);
  }

  /** Close idle keep-alive sockets (open watches are aborted by their own signals). */
  close(): void {
    this.#agent.destroy();
    this.#watchAgent.destroy();
  }

  url(path: string, query?: Query): URL {
    const base = this.server.pathname.replace(/\/$/, '');
    const url = new URL(this.server.origin + base + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    return url;
  }

  async #open(
    method: string,
    url: URL,
    extraHeaders: Record<string, string>,
    signal: AbortSignal | undefined,
    agent: Agent = this.#agent,
  ): Promise<ClientRequest> {
    const headers = { ...(await this.#credentials.headers()), Accept: 'application/json', ...extraHeaders };
    const mod = this.#isHttps ? https : http;
    return mod.request(url, { method, headers, agent, signal });
  }

  /** One request; resolves with the decoded JSON body, rejects with KubeApiError for non-2xx. */
  async request<T = unknown>(opts: RequestOptions): Promise<T> {
    const url = this.url(opts.path, opts.query);
    const payload =
      opts.body === undefined
        ? undefined
        : typeof opts.body === 'string'
          ? opts.body
          : JSON.stringify(opts.body);
    const link = linkedAbort(opts.signal);
    const timer = setTimeout(
      () => link.controller.abort(new Error(`timed out after ${opts.timeoutMs ?? 30_000} ms`)),
      opts.timeoutMs ?? 30_000,
    );
    const signal = link.controller.signal;
    const cleanup = () => {
      clearTimeout(timer);
      link.dispose();
    };
    const extra: Record<string, string> = {};
    if (payload !== undefined) {
      extra['Content-Type'] = opts.contentType ?? 'application/json';
      extra['Content-Length'] = String(Buffer.byteLength(payload));
    }
    let req: ClientRequest;
    try {
      req = await this.#open(opts.method, url, extra, signal);
    } catch (err) {
      cleanup();
      throw new Error(
        `${opts.method} ${url.pathname}: could not resolve credentials: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const pathForErrors = url.pathname + url.search;
    return new Promise<T>((resolve, reject) => {
      signal.addEventListener('abort', () => req.destroy(signal.reason), { once: true });
      req.on('error', (err) =>
        reject(new Error(`${opts.method} ${pathForErrors}: ${err.message}`, { cause: err })),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) =>
          reject(new Error(`${opts.method} ${pathForErrors}: ${err.message}`, { cause: err })),
        );
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let body: unknown = text;
          if (text.length > 0 && (res.headers['content-type'] ?? '').includes('json')) {
            try {
              body = JSON.parse(text);
            } catch {
              // keep the text: the error below carries it
            }
          }
          if (status >= 200 && status < 300) resolve(body as T);
          else
            reject(
              new KubeApiError({
                status,
                method: opts.method,
                path: pathForErrors,
                body: body as KubeStatus | string,
              }),
            );
        });
      });
      req.end(payload);
    }).finally(cleanup);
  }

  /**
   * A watch stream (`?watch=true`), newline-delimited JSON events. Resolves when the server
   * closes the stream (timeoutSeconds elapsed, apiserver shutdown); rejects on a non-200
   * answer (KubeApiError), a network error, or idleness (WatchIdleError). Aborting through
   * `signal` resolves.
   */
  async watchStream(opts: WatchStreamOptions): Promise<void> {
    const url = this.url(opts.path, { ...opts.query, watch: true });
    const link = linkedAbort(opts.signal);
    const inner = link.controller;
    const signal = inner.signal;
    if (signal.aborted) return;
    const req = await this.#open('GET', url, {}, signal, this.#watchAgent);
    const pathForErrors = url.pathname + url.search;
    return new Promise<void>((resolve, reject) => {
      let idle: NodeJS.Timeout | undefined;
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        if (idle) clearTimeout(idle);
        inner.abort();
        link.dispose();
        req.destroy();
        if (err === undefined || opts.signal?.aborted) resolve();
        else reject(err);
      };
      const touch = () => {
        if (opts.idleTimeoutMs === undefined) return;
        if (idle) clearTimeout(idle);
        idle = setTimeout(
          () => finish(new WatchIdleError(`watch ${pathForErrors}: no data for ${opts.idleTimeoutMs} ms`)),
          opts.idleTimeoutMs,
        );
      };
      touch();
      signal.addEventListener('abort', () => finish(), { once: true });
      req.on('socket', (s) => s.setKeepAlive(true, 15_000));
      req.on('error', (err) =>
        finish(
          opts.signal?.aborted
            ? undefined
            : new Error(`watch ${pathForErrors}: ${err.message}`, { cause: err }),
        ),
      );
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: KubeStatus | string = text;
            try {
              body = JSON.parse(text) as KubeStatus;
            } catch {}
            finish(new KubeApiError({ status, method: 'GET', path: pathForErrors, body }));
          });
          res.on('error', finish);
          return;
        }
        opts.onOpen?.();
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          touch();
          buf += chunk;
          let nl = buf.indexOf('\n');
          while (nl >= 0 && !settled) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            nl = buf.indexOf('\n');
            if (line.length === 0) continue;
            let event: { type: string; object: unknown };
            try {
              event = JSON.parse(line) as { type: string; object: unknown };
            } catch (err) {
              finish(
                new Error(`watch ${pathForErrors}: undecodable event line: ${line.slice(0, 200)}`, {
                  cause: err,
                }),
              );
              return;
            }
            try {
              opts.onEvent(event);
            } catch (err) {
              finish(err);
              return;
            }
          }
        });
        res.on('end', () => finish());
        res.on('close', () => finish());
        res.on('error', (err) => finish(new Error(`watch ${pathForErrors}: ${err.message}`, { cause: err })));
      });
      req.end();
    });
  }
}
