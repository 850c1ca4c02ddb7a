/**
 * A process's environment from its template's `env` and `envFrom` (issue 19), resolved at each
 * start of the replica as the kubelet does for a container (pkg/kubelet/kubelet_pods.go,
 * makeEnvironmentVariables): `envFrom` entries first, a later one overriding an earlier one, then
 * `env`, overriding them all; keys of an `envFrom` object that are no valid variable names are
 * skipped and reported; a missing object or key is an error unless the reference is `optional`.
 * Values are taken as written: there is no `$(VAR)` expansion, as there is none for literal env.
 * The objects are read through `ConfigObjects` (the host's own account, host-account.ts).
 */
import type { ReplicaTemplate, ProcessSpec as TemplateProcess } from '../../crds/types.ts';
import type { EnvVar } from '../supervisor/spec.ts';

export type ConfigKind = 'ConfigMap' | 'Secret';

/** An object's data as strings (a Secret's decoded), or undefined when it does not exist. */
export type ConfigObjects = {
  data(kind: ConfigKind, namespace: string, name: string): Promise<Record<string, string> | undefined>;
};

/** Why a reference could not be read: the object or key is missing, the host may not read it, or the API failed. */
export type UnresolvedReason = 'ConfigMissing' | 'ConfigForbidden' | 'ConfigUnavailable';

/** A read refused by the API server (403): the host's Role does not list the object yet. */
export class ConfigAccessError extends Error {
  override readonly name = 'ConfigAccessError';
}

/** One reference that is not optional and did not resolve; `where` is its field path. */
export interface Unresolved {
  reason: UnresolvedReason;
  where: string;
  message: string;
}

/** Keys of one envFrom object that are no valid variable names, skipped as the kubelet skips them. */
export interface SkippedKeys {
  kind: ConfigKind;
  name: string;
  keys: string[];
}

export interface ResolvedEnv {
  /** Per process name: its variables, in the order they were first set. */
  env: Map<string, EnvVar[]>;
  skipped: SkippedKeys[];
}

/** Thrown by resolveEnv when a reference that is not optional did not resolve. */
export class UnresolvedConfigError extends Error {
  override readonly name = 'UnresolvedConfigError';
  readonly reason: UnresolvedReason;
  readonly unresolved: Unresolved[];
  constructor(unresolved: Unresolved[]) {
    const shown = unresolved.slice(0, 4).map((u) => `${u.message} (${u.where})`);
    if (unresolved.length > 4) shown.push(`and ${unresolved.length - 4} more`);
    super(shown.join('; '));
    this.unresolved = unresolved;
    // The first that is no plain absence says most: the host's access or the API.
    this.reason = unresolved.find((u) => u.reason !== 'ConfigMissing')?.reason ?? 'ConfigMissing';
  }
}

/** The kubelet's rule for an environment variable name (validation.IsEnvVarName, Kubernetes 1.32). */
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

const kindWord = (kind: ConfigKind) => (kind === 'ConfigMap' ? 'configmap' : 'secret');

type Lookup =
  | { ok: true; data: Record<string, string> }
  | { ok: false; reason: UnresolvedReason; message: string };

/**
 * Resolves every process's environment. Each object is read once. Throws UnresolvedConfigError
 * naming every reference that is not optional and could not be resolved, with its field path.
 */
export async function resolveEnv(
  template: ReplicaTemplate,
  namespace: string,
  objects: ConfigObjects,
): Promise<ResolvedEnv> {
  const reads = new Map<string, Promise<Lookup>>();
  const lookup = (kind: ConfigKind, name: string): Promise<Lookup> => {
    const key = `${kind}/${name}`;
    let read = reads.get(key);
    if (!read) {
      read = objects.data(kind, namespace, name).then(
        (data): Lookup =>
          data
            ? { ok: true, data }
            : { ok: false, reason: 'ConfigMissing', message: `${kindWord(kind)} "${name}" not found` },
        (err: Error): Lookup =>
          err instanceof ConfigAccessError
            ? { ok: false, reason: 'ConfigForbidden', message: err.message }
            : {
                ok: false,
                reason: 'ConfigUnavailable',
                message: `${kindWord(kind)} "${name}" could not be read: ${err.message}`,
              },
      );
      reads.set(key, read);
    }
    return read;
  };

  const unresolved: Unresolved[] = [];
  const skipped: SkippedKeys[] = [];
  const env = new Map<string, EnvVar[]>();
  for (const [i, p] of template.processes.entries()) {
    const vars = new Map<string, string>();
    await fromObjects(p, i, vars, lookup, unresolved, skipped);
    await fromEnv(p, i, vars, lookup, unresolved, namespace);
    env.set(
      p.name,
      [...vars].map(([name, value]) => ({ name, value })),
    );
  }
  if (unresolved.length > 0) throw new UnresolvedConfigError(unresolved);
  return { env, skipped };
}

async function fromObjects(
  p: TemplateProcess,
  i: number,
  vars: Map<string, string>,
  lookup: (kind: ConfigKind, name: string) => Promise<Lookup>,
  unresolved: Unresolved[],
  skipped: SkippedKeys[],
): Promise<void> {
  for (const [j, from] of (p.envFrom ?? []).entries()) {
    const kind: ConfigKind = from.configMapRef ? 'ConfigMap' : 'Secret';
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref) continue;
    const where = `processes[${i}].envFrom[${j}]`;
    const found = await lookup(kind, ref.name);
    if (!found.ok) {
      if (!(ref.optional && found.reason === 'ConfigMissing')) {
        unresolved.push({ reason: found.reason, where, message: found.message });
      }
      continue;
    }
    const invalid: string[] = [];
    for (const [key, value] of Object.entries(found.data)) {
      const name = `${from.prefix ?? ''}${key}`;
      if (!ENV_NAME.test(name)) {
        invalid.push(key);
        continue;
      }
      setLast(vars, name, value);
    }
    if (invalid.length > 0) skipped.push({ kind, name: ref.name, keys: invalid.sort() });
  }
}

async function fromEnv(
  p: TemplateProcess,
  i: number,
  vars: Map<string, string>,
  lookup: (kind: ConfigKind, name: string) => Promise<Lookup>,
  unresolved: Unresolved[],
  namespace: string,
): Promise<void> {
  for (const [j, e] of (p.env ?? []).entries()) {
    const ref = e.valueFrom?.configMapKeyRef ?? e.valueFrom?.secretKeyRef;
    if (!ref) {
      setLast(vars, e.name, e.value ?? '');
      continue;
    }
    const kind: ConfigKind = e.valueFrom?.configMapKeyRef ? 'ConfigMap' : 'Secret';
    const where = `processes[${i}].env[${j}] ${e.name}`;
    const found = await lookup(kind, ref.name);
    // An optional reference that does not resolve leaves what envFrom set, as the kubelet does.
    if (!found.ok) {
      if (!(ref.optional && found.reason === 'ConfigMissing')) {
        unresolved.push({ reason: found.reason, where, message: found.message });
      }
      continue;
    }
    const value = found.data[ref.key];
    if (value === undefined) {
      if (!ref.optional) {
        unresolved.push({
          reason: 'ConfigMissing',
          where,
          message: `key "${ref.key}" not found in ${kindWord(kind)} ${namespace}/${ref.name}`,
        });
      }
      continue;
    }
    setLast(vars, e.name, value);
  }
}

/** Sets a variable, moving it after those set before it (the process sees them in that order). */
function setLast(vars: Map<string, string>, name: string, value: string): void {
  vars.delete(name);
  vars.set(name, value);
}
