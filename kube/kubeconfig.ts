import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type * as Yaml from 'yaml';

/**
 * Orrery's kubeconfig model: the subset of client-go's clientcmd `Config` that Orrery can use,
 * parsed from YAML with every relative file path resolved against the directory of the file it
 * came from (https://kubernetes.io/docs/concepts/configuration/organize-cluster-access-kubeconfig/#file-references),
 * merged the way kubectl merges a KUBECONFIG list, and with the context in use selected and
 * checked once, here. Credentials are turned into TLS options and headers by credentials.ts.
 */

export class KubeConfigError extends Error {
  override readonly name = 'KubeConfigError';
}

export interface KubeCluster {
  readonly name: string;
  /** The file this entry was read from (or what stood in for one); errors name it. */
  readonly source: string;
  readonly server: string;
  /** Absolute path of a PEM CA bundle. */
  readonly certificateAuthority?: string | undefined;
  /** Base64 of a PEM CA bundle. */
  readonly certificateAuthorityData?: string | undefined;
  readonly insecureSkipTlsVerify: boolean;
  readonly tlsServerName?: string | undefined;
  /** Parsed so that selecting this cluster can refuse it: Orrery does not speak through proxies. */
  readonly proxyUrl?: string | undefined;
}

/** The `exec` stanza (client.authentication.k8s.io), handed to client-node as written, `command` resolved. */
export interface ExecPlugin {
  readonly command: string;
  readonly [field: string]: unknown;
}

export interface AuthProvider {
  readonly name: string;
  readonly config?: Readonly<Record<string, unknown>> | undefined;
}

export interface KubeUser {
  readonly name: string;
  readonly source: string;
  /** Absolute paths or base64 PEM, as in the kubeconfig. */
  readonly clientCertificate?: string | undefined;
  readonly clientCertificateData?: string | undefined;
  readonly clientKey?: string | undefined;
  readonly clientKeyData?: string | undefined;
  readonly token?: string | undefined;
  /** Absolute path; re-read periodically, so a rotated token is picked up. */
  readonly tokenFile?: string | undefined;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** `as`, `as-uid`, `as-groups`: sent as Impersonate-* headers. */
  readonly impersonate?: { user?: string; uid?: string; groups?: readonly string[] } | undefined;
  /** `as-user-extra` is parsed only to be refused when this user is selected. */
  readonly impersonateExtra?: boolean | undefined;
  readonly exec?: ExecPlugin | undefined;
  readonly authProvider?: AuthProvider | undefined;
}

export interface KubeContext {
  readonly name: string;
  readonly source: string;
  readonly cluster: string;
  readonly user?: string | undefined;
  readonly namespace?: string | undefined;
}

/** One kubeconfig document, parsed and checked field by field. */
export interface KubeConfigFile {
  readonly source: string;
  readonly clusters: readonly KubeCluster[];
  readonly users: readonly KubeUser[];
  readonly contexts: readonly KubeContext[];
  readonly currentContext?: string | undefined;
}

/**
 * One or more kubeconfig files merged, with the context in use resolved to its cluster and user.
 * Constructing one checks that selection the way client-go's `ClientConfig()` does: a context
 * that exists, a cluster with a usable server, a user with exactly one way to authenticate.
 */
export class KubeConfig {
  /** The files merged, first first. */
  readonly sources: readonly string[];
  readonly clusters: ReadonlyMap<string, KubeCluster>;
  readonly users: ReadonlyMap<string, KubeUser>;
  readonly contexts: ReadonlyMap<string, KubeContext>;
  /** The name of the context in use: the override, else current-context. */
  readonly currentContext: string;
  readonly context: KubeContext;
  readonly cluster: KubeCluster;
  readonly user: KubeUser;

  /**
   * kubectl's merge of a KUBECONFIG list: the first file to define a cluster, user or context name
   * wins, and current-context comes from the first file that sets one
   * (https://kubernetes.io/docs/concepts/configuration/organize-cluster-access-kubeconfig/#merging-kubeconfig-files).
   */
  constructor(files: readonly KubeConfigFile[], opts: { context?: string | undefined } = {}) {
    const clusters = new Map<string, KubeCluster>();
    const users = new Map<string, KubeUser>();
    const contexts = new Map<string, KubeContext>();
    let currentContext: string | undefined;
    for (const file of files) {
      for (const c of file.clusters) if (!clusters.has(c.name)) clusters.set(c.name, c);
      for (const u of file.users) if (!users.has(u.name)) users.set(u.name, u);
      for (const c of file.contexts) if (!contexts.has(c.name)) contexts.set(c.name, c);
      currentContext ??= file.currentContext;
    }
    this.sources = files.map((f) => f.source);
    this.clusters = clusters;
    this.users = users;
    this.contexts = contexts;
    const where = this.sources.join(', ');

    const name = opts.context ?? currentContext;
    if (name === undefined) {
      throw new KubeConfigError(
        `kubeconfig ${where}: current-context is not set; set it (kubectl config use-context) or pass --context`,
      );
    }
    const context = contexts.get(name);
    if (!context) {
      const known = [...contexts.keys()].join(', ') || 'none';
      const what = opts.context !== undefined ? `context "${name}"` : `current-context "${name}"`;
      throw new KubeConfigError(`kubeconfig ${where}: ${what} is not defined (contexts: ${known})`);
    }
    const at = `kubeconfig ${context.source}: contexts["${name}"].context`;
    const cluster = clusters.get(context.cluster);
    if (!cluster) {
      throw new KubeConfigError(`${at}.cluster: cluster "${context.cluster}" is not defined in ${where}`);
    }
    if (context.user === undefined) {
      throw new KubeConfigError(`${at}.user: not set; Orrery needs a user with credentials`);
    }
    const user = users.get(context.user);
    if (!user) throw new KubeConfigError(`${at}.user: user "${context.user}" is not defined in ${where}`);
    checkCluster(cluster);
    checkUser(user);
    this.currentContext = name;
    this.context = context;
    this.cluster = cluster;
    this.user = user;
  }

  /** Whether the user's credentials come from an exec plugin or an auth-provider (resolved by client-node). */
  get usesCredentialPlugin(): boolean {
    return this.user.exec !== undefined || this.user.authProvider !== undefined;
  }
}

/** Where an entry's field is, for error messages: `kubeconfig /f: users["u"].user.token`. */
export function fieldOf(entry: KubeCluster | KubeUser, field: string): string {
  const kind = 'server' in entry ? 'clusters' : 'users';
  return `kubeconfig ${entry.source}: ${kind}["${entry.name}"].${kind === 'clusters' ? 'cluster' : 'user'}.${field}`;
}

function checkCluster(c: KubeCluster): void {
  const at = (field: string) => fieldOf(c, field);
  let url: URL;
  try {
    url = new URL(c.server);
  } catch {
    throw new KubeConfigError(`${at('server')}: expected a URL like https://host:6443, got "${c.server}"`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new KubeConfigError(`${at('server')}: expected an https:// or http:// URL, got "${c.server}"`);
  }
  if (c.proxyUrl !== undefined) {
    throw new KubeConfigError(
      `${at('proxy-url')}: not supported; Orrery connects to the API server directly`,
    );
  }
  if (c.certificateAuthority !== undefined && c.certificateAuthorityData !== undefined) {
    throw new KubeConfigError(
      `${at('certificate-authority')}: also certificate-authority-data is set; keep one`,
    );
  }
  // client-go refuses this combination too (transport.TLSConfigFor).
  if (c.insecureSkipTlsVerify && (c.certificateAuthority ?? c.certificateAuthorityData) !== undefined) {
    throw new KubeConfigError(
      `${at('insecure-skip-tls-verify')}: set together with a certificate authority; keep one`,
    );
  }
}

/** client-go's validateAuthInfo: certificates go with any method, but at most one method that says who you are. */
function checkUser(u: KubeUser): void {
  const at = (field: string) => fieldOf(u, field);
  if (u.clientCertificate !== undefined && u.clientCertificateData !== undefined) {
    throw new KubeConfigError(`${at('client-certificate')}: also client-certificate-data is set; keep one`);
  }
  if (u.clientKey !== undefined && u.clientKeyData !== undefined) {
    throw new KubeConfigError(`${at('client-key')}: also client-key-data is set; keep one`);
  }
  const hasCert = u.clientCertificate !== undefined || u.clientCertificateData !== undefined;
  const hasKey = u.clientKey !== undefined || u.clientKeyData !== undefined;
  if (hasCert !== hasKey) {
    throw new KubeConfigError(
      hasCert
        ? `${at('client-key')}: client-certificate is set but no client-key or client-key-data`
        : `${at('client-certificate')}: client-key is set but no client-certificate or client-certificate-data`,
    );
  }
  if (u.impersonateExtra) {
    throw new KubeConfigError(`${at('as-user-extra')}: not supported (as, as-uid and as-groups are)`);
  }
  const methods = [
    u.token !== undefined || u.tokenFile !== undefined ? 'token' : '',
    u.username !== undefined || u.password !== undefined ? 'username/password' : '',
    u.exec !== undefined ? 'exec' : '',
    u.authProvider !== undefined ? 'auth-provider' : '',
  ].filter((m) => m !== '');
  if (methods.length > 1) {
    throw new KubeConfigError(
      `kubeconfig ${u.source}: users["${u.name}"].user: more than one way to authenticate (${methods.join(', ')}); keep one`,
    );
  }
  if (methods[0] === 'username/password' && (u.username === undefined || u.password === undefined)) {
    throw new KubeConfigError(
      `${at(u.username === undefined ? 'username' : 'password')}: basic auth needs both`,
    );
  }
  if (methods.length === 0 && !hasCert) {
    throw new KubeConfigError(
      `kubeconfig ${u.source}: users["${u.name}"].user: no credentials; set token, tokenFile, ` +
        'client-certificate and client-key (or their -data), username and password, exec or auth-provider',
    );
  }
}

/**
 * A kubeconfig's document. JSON (what `orrery up` writes for its daemons) is read by JSON.parse;
 * anything else by the yaml package, loaded only then: it costs a process ~7 MiB of resident
 * memory for good, and in a cluster or under `orrery up` no daemon needs it.
 */
function parseDocument(text: string): unknown {
  if (text.trimStart().startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch {
      // not JSON after all: YAML's errors say more
    }
  }
  const yaml = createRequire(import.meta.url)('yaml') as typeof Yaml;
  return yaml.parse(text);
}

/** Read as YAML (JSON is YAML too); `baseDir` resolves relative paths, by default the file's own directory. */
export function parseKubeConfig(
  text: string,
  source: string,
  baseDir = resolve(dirname(source)),
): KubeConfigFile {
  let doc: unknown;
  try {
    doc = parseDocument(text);
  } catch (err) {
    throw new KubeConfigError(`kubeconfig ${source}: not valid YAML: ${(err as Error).message}`, {
      cause: err,
    });
  }
  doc ??= {}; // an empty file is an empty config, as for kubectl
  const top = new Fields(`kubeconfig ${source}`, doc, '');
  const kind = top.string('kind');
  if (kind !== undefined && kind !== 'Config') {
    throw new KubeConfigError(`kubeconfig ${source}: kind: expected Config, got "${kind}"`);
  }
  const path = (p: string | undefined) => (p === undefined || isAbsolute(p) ? p : join(baseDir, p));
  const clusters = top.namedList(
    'clusters',
    'cluster',
    (f, name): KubeCluster => ({
      name,
      source,
      server: f.required('server'),
      certificateAuthority: path(f.string('certificate-authority')),
      certificateAuthorityData: f.string('certificate-authority-data'),
      insecureSkipTlsVerify: f.boolean('insecure-skip-tls-verify') ?? false,
      tlsServerName: f.string('tls-server-name'),
      proxyUrl: f.string('proxy-url'),
    }),
  );
  const users = top.namedList('users', 'user', (f, name): KubeUser => {
    if (f.has('token-file')) throw f.error('token-file', 'the kubeconfig field is spelled tokenFile');
    const as = f.string('as');
    const uid = f.string('as-uid');
    const groups = f.stringList('as-groups');
    return {
      name,
      source,
      clientCertificate: path(f.string('client-certificate')),
      clientCertificateData: f.string('client-certificate-data'),
      clientKey: path(f.string('client-key')),
      clientKeyData: f.string('client-key-data'),
      token: f.string('token'),
      tokenFile: path(f.string('tokenFile')),
      username: f.string('username'),
      password: f.string('password'),
      impersonate:
        as === undefined && uid === undefined && groups === undefined
          ? undefined
          : {
              ...(as !== undefined ? { user: as } : {}),
              ...(uid !== undefined ? { uid } : {}),
              ...(groups !== undefined ? { groups } : {}),
            },
      impersonateExtra: f.has('as-user-extra') || undefined,
      exec: execPlugin(f, baseDir),
      authProvider: authProvider(f),
    };
  });
  const contexts = top.namedList(
    'contexts',
    'context',
    (f, name): KubeContext => ({
      name,
      source,
      cluster: f.required('cluster'),
      user: f.string('user'),
      namespace: f.string('namespace'),
    }),
  );
  return { source, clusters, users, contexts, currentContext: top.string('current-context') };
}

/** client-go resolves an exec command against the kubeconfig's directory only when it is a path, not a name to look up in PATH. */
function execPlugin(user: Fields, baseDir: string): ExecPlugin | undefined {
  const f = user.mapping('exec');
  if (!f) return undefined;
  const command = f.required('command');
  f.stringList('args');
  return {
    ...f.raw,
    command: command.includes('/') && !isAbsolute(command) ? join(baseDir, command) : command,
  };
}

function authProvider(user: Fields): AuthProvider | undefined {
  const f = user.mapping('auth-provider');
  if (!f) return undefined;
  return { name: f.required('name'), config: f.mapping('config')?.raw };
}

/** Typed reads of one YAML mapping; every error names the file and the field path. */
class Fields {
  readonly raw: Readonly<Record<string, unknown>>;
  readonly #where: string;
  readonly #path: string;

  constructor(where: string, value: unknown, path: string) {
    this.#where = where;
    this.#path = path;
    if (!isMapping(value)) {
      throw new KubeConfigError(
        `${where}: ${path || 'document'}: expected a mapping, got ${describe(value)}`,
      );
    }
    this.raw = value;
  }

  error(key: string, problem: string): KubeConfigError {
    return new KubeConfigError(`${this.#where}: ${this.#path}${this.#path ? '.' : ''}${key}: ${problem}`);
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  /** A string; unset, null and "" all mean "not set", as in client-go. */
  string(key: string): string | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw this.error(key, `expected a string, got ${describe(v)}`);
    return v;
  }

  required(key: string): string {
    const v = this.string(key);
    if (v === undefined) throw this.error(key, 'required, not set');
    return v;
  }

  boolean(key: string): boolean | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw this.error(key, `expected true or false, got ${describe(v)}`);
    return v;
  }

  stringList(key: string): string[] | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) {
      throw this.error(key, `expected a list of strings, got ${describe(v)}`);
    }
    return v as string[];
  }

  mapping(key: string): Fields | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    return new Fields(this.#where, v, `${this.#path}${this.#path ? '.' : ''}${key}`);
  }

  /** kubeconfig's `[{name, <body>: {...}}]` lists; names are unique within one file, as kubectl requires. */
  namedList<T>(key: string, body: string, read: (f: Fields, name: string) => T): T[] {
    const v = this.raw[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw this.error(key, `expected a list, got ${describe(v)}`);
    const seen = new Set<string>();
    return v.map((item, i) => {
      const entry = new Fields(this.#where, item, `${key}[${i}]`);
      const name = entry.required('name');
      if (seen.has(name)) throw this.error(`${key}[${i}].name`, `"${name}" is defined twice in this file`);
      seen.add(name);
      return read(new Fields(this.#where, entry.raw[body] ?? {}, `${key}["${name}"].${body}`), name);
    });
  }
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}
