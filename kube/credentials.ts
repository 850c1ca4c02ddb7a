import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type https from 'node:https';
import { fieldOf, type KubeCluster, type KubeConfig, KubeConfigError, type KubeUser } from './kubeconfig.ts';

/**
 * What a KubeConfig's cluster and user become on the wire: TLS options for the agents and the
 * headers of each request. Certificates, tokens, token files and basic auth are handled here;
 * only exec plugins and auth-providers are handed to @kubernetes/client-node, which is imported
 * then and not before: importing it loads its whole generated API client.
 */

export type RequestHeaders = Record<string, string | string[]>;

export interface TlsMaterial {
  ca?: Buffer | undefined;
  cert?: Buffer | string | undefined;
  key?: Buffer | string | undefined;
  servername?: string | undefined;
  rejectUnauthorized?: boolean | undefined;
}

export interface Credentials {
  /** For the agents: fixed for the life of the connection pool, as client-go's transport is. */
  readonly tls: TlsMaterial;
  /** Headers for the next request; bearer tokens from a token file or a plugin rotate. */
  headers(): Promise<RequestHeaders>;
}

export interface CredentialsOptions {
  /**
   * How long a token read from a tokenFile is used before reading the file again; default 60 s,
   * client-go's period for tokenFile and the projected service account token.
   */
  tokenFileRefreshMs?: number;
  /**
   * How long plugin headers are reused before asking client-node again; default 10 s. It runs an
   * exec plugin again only when the credential it cached has expired.
   */
  pluginRefreshMs?: number;
}

export async function credentialsFor(kc: KubeConfig, opts: CredentialsOptions = {}): Promise<Credentials> {
  const { cluster, user } = kc;
  const tls = tlsOf(cluster, user);
  const fixed = impersonation(user);
  if (user.token !== undefined) fixed.Authorization = `Bearer ${user.token}`;
  if (user.username !== undefined) {
    fixed.Authorization = `Basic ${Buffer.from(`${user.username}:${user.password ?? ''}`).toString('base64')}`;
  }
  if (user.tokenFile !== undefined) {
    const tokens = await TokenFile.open(user.tokenFile, fieldOf(user, 'tokenFile'), opts.tokenFileRefreshMs);
    return {
      tls,
      headers: async () => ({ ...fixed, Authorization: `Bearer ${await tokens.token()}` }),
    };
  }
  if (kc.usesCredentialPlugin) return pluginCredentials(kc, tls, fixed, opts.pluginRefreshMs ?? 10_000);
  return { tls, headers: async () => fixed };
}

function tlsOf(cluster: KubeCluster, user: KubeUser): TlsMaterial {
  const tls: TlsMaterial = {};
  if (cluster.insecureSkipTlsVerify) tls.rejectUnauthorized = false;
  if (cluster.tlsServerName !== undefined) tls.servername = cluster.tlsServerName;
  tls.ca = pem(
    cluster,
    'certificate-authority',
    cluster.certificateAuthority,
    cluster.certificateAuthorityData,
  );
  tls.cert = pem(user, 'client-certificate', user.clientCertificate, user.clientCertificateData);
  tls.key = pem(user, 'client-key', user.clientKey, user.clientKeyData);
  return tls;
}

/** A PEM from `<field>` (a file) or `<field>-data` (base64). */
function pem(
  entry: KubeCluster | KubeUser,
  field: string,
  file: string | undefined,
  data: string | undefined,
): Buffer | undefined {
  if (file !== undefined) {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new KubeConfigError(`${fieldOf(entry, field)}: cannot read ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  return data === undefined ? undefined : Buffer.from(data, 'base64');
}

function impersonation(user: KubeUser): RequestHeaders {
  const headers: RequestHeaders = {};
  const as = user.impersonate;
  if (as?.user !== undefined) headers['Impersonate-User'] = as.user;
  if (as?.uid !== undefined) headers['Impersonate-Uid'] = as.uid;
  if (as?.groups?.length) headers['Impersonate-Group'] = [...as.groups];
  return headers;
}

/**
 * A bearer token file read again once it is `refreshMs` old, so a rotated token (a projected
 * service account token, kubelet rotates them) is picked up. A failed or empty read keeps the
 * last token, as client-go's cachingTokenSource does; only the first read must succeed.
 */
class TokenFile {
  readonly #path: string;
  readonly #refreshMs: number;
  #token: string;
  #readAt: number;
  #reading: Promise<void> | undefined;

  private constructor(path: string, token: string, refreshMs: number) {
    this.#path = path;
    this.#token = token;
    this.#readAt = Date.now();
    this.#refreshMs = refreshMs;
  }

  static async open(path: string, field: string, refreshMs = 60_000): Promise<TokenFile> {
    let token: string;
    try {
      token = (await readFile(path, 'utf8')).trim();
    } catch (err) {
      throw new KubeConfigError(`${field}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (token === '') throw new KubeConfigError(`${field}: ${path} is empty`);
    return new TokenFile(path, token, refreshMs);
  }

  async token(): Promise<string> {
    if (Date.now() - this.#readAt >= this.#refreshMs) {
      this.#reading ??= this.#reread().finally(() => {
        this.#reading = undefined;
      });
      await this.#reading;
    }
    return this.#token;
  }

  async #reread(): Promise<void> {
    const token = await readFile(this.#path, 'utf8').then(
      (text) => text.trim(),
      () => '',
    );
    if (token !== '') {
      this.#token = token;
      this.#readAt = Date.now();
    }
  }
}

/**
 * exec plugins and auth-providers (oidc, gcp, azure) through client-node's KubeConfig, imported
 * only now. It returns the Authorization header and, from an exec plugin, possibly a client
 * certificate; the TLS of the cluster stays ours.
 */
async function pluginCredentials(
  kc: KubeConfig,
  tls: TlsMaterial,
  fixed: RequestHeaders,
  refreshMs: number,
): Promise<Credentials> {
  const { cluster, user } = kc;
  const field = fieldOf(user, user.exec !== undefined ? 'exec' : 'auth-provider');
  const clientNode = await import('@kubernetes/client-node');
  const resolver = new clientNode.KubeConfig();
  // skipTLSVerify: client-node builds an agent of its own here that is never used, and it
  // refuses to build one for an http:// server without it.
  resolver.loadFromClusterAndUser(
    { name: cluster.name, server: cluster.server, skipTLSVerify: true },
    { name: user.name, exec: user.exec, authProvider: user.authProvider },
  );
  const resolve = async (): Promise<https.RequestOptions> => {
    const out: https.RequestOptions = {};
    try {
      await resolver.applyToHTTPSOptions(out);
    } catch (err) {
      throw new KubeConfigError(`${field}: ${(err as Error).message}`, { cause: err });
    }
    return out;
  };
  const first = await resolve();
  if (first.cert !== undefined) tls.cert = first.cert as Buffer | string;
  if (first.key !== undefined) tls.key = first.key as Buffer | string;
  let current = { headers: { ...fixed, ...headersOf(first) }, at: Date.now() };
  let refreshing: Promise<RequestHeaders> | undefined;
  return {
    tls,
    headers: async () => {
      if (Date.now() - current.at < refreshMs) return current.headers;
      refreshing ??= resolve()
        .then((out) => {
          current = { headers: { ...fixed, ...headersOf(out) }, at: Date.now() };
          return current.headers;
        })
        .finally(() => {
          refreshing = undefined;
        });
      return refreshing;
    },
  };
}

function headersOf(opts: https.RequestOptions): RequestHeaders {
  const out: RequestHeaders = {};
  for (const [k, v] of Object.entries(opts.headers ?? {})) {
    if (typeof v === 'string' || typeof v === 'number') out[k] = String(v);
    else if (Array.isArray(v)) out[k] = v.map(String);
  }
  return out;
}
