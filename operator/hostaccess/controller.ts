// Host access (docs/DESIGN.md §10, issue 19): what a host may read, enforced by the API server's
// own authorizer, as the Node authorizer limits a kubelet to the Secrets of its pods.
// reconcile(hostName) keeps, for a Host that exists:
// - the ServiceAccount orrery-system/orrery-host-<host>, whose token the host's runtime asks for
//   (TokenRequest; deploy/rbac.yaml holds each runtime to its own node's account);
// - in each namespace where Replicas bound to the host reference ConfigMaps or Secrets (env
//   valueFrom, envFrom), a Role orrery-host-<host> granting `get` on exactly those names
//   (resourceNames), and a RoleBinding of it to that account; a Role whose namespace has no such
//   reference left is deleted with its binding.
// When the Host is gone from the API, its account, Roles and RoleBindings go too.
//
// Only `get`: the runtime reads each object by name at a replica's start (resourceNames cannot
// authorize a list), and the operator may grant only what it holds itself (RBAC's escalation
// check), so it holds `get` on ConfigMaps and Secrets and no list or watch.

import { configReferences } from '../../crds/config-refs.ts';
import {
  ENDPOINT_SLICE_MANAGER,
  hostAccountName,
  MANAGED_BY_LABEL,
  SYSTEM_NAMESPACE,
} from '../../crds/labels.ts';
import type { Replica } from '../../crds/types.ts';
import {
  isAlreadyExists,
  isNotFound,
  type KubeObject,
  type ReconcileResult,
  type ResourceClient,
  type WorkQueue,
} from '../../kube/index.ts';
import { type Controller, type OperatorContext, replicasOnHost } from '../context.ts';
import { accessRules, hostOfAccessObject, MAX_NAME, type PolicyRule, type Role } from './objects.ts';

/** What each namespace's Role must grant for the replicas bound to a host (those not being deleted). */
export function wantedAccess(replicas: readonly Replica[]): Map<string, PolicyRule[]> {
  const byNamespace = new Map<string, { configMaps: Set<string>; secrets: Set<string> }>();
  for (const r of replicas) {
    if (r.metadata.deletionTimestamp) continue;
    const refs = configReferences(r.spec.template);
    if (refs.configMaps.size === 0 && refs.secrets.size === 0) continue;
    const ns = r.metadata.namespace as string;
    const into = byNamespace.get(ns) ?? { configMaps: new Set(), secrets: new Set() };
    for (const n of refs.configMaps) into.configMaps.add(n);
    for (const n of refs.secrets) into.secrets.add(n);
    byNamespace.set(ns, into);
  }
  return new Map([...byNamespace].map(([ns, refs]) => [ns, accessRules(refs)]));
}

/** Whether a Replica references any ConfigMap or Secret (so it may grant its host reads). */
function grants(r: Replica): boolean {
  const refs = configReferences(r.spec.template);
  return refs.configMaps.size > 0 || refs.secrets.size > 0;
}

/** A short key of what a Replica grants its host, to skip the updates (status writes) that change none of it. */
function grantKey(r: Replica): string {
  const refs = configReferences(r.spec.template);
  return `${r.spec.host}|${Boolean(r.metadata.deletionTimestamp)}|${[...refs.configMaps].sort()}|${[...refs.secrets].sort()}`;
}

async function ignoreNotFound(p: Promise<unknown>): Promise<void> {
  await p.catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
}

export function hostAccessController(ctx: OperatorContext): Controller {
  const { informers, clients, log } = ctx;
  const labels = { [MANAGED_BY_LABEL]: ENDPOINT_SLICE_MANAGER };

  const accessKeys = (o: KubeObject) => hostOfAccessObject(o);
  return {
    name: 'host-access',
    workers: 2,
    watch(queue: WorkQueue<string>) {
      informers.hosts.addHandlers({
        add: (h) => queue.add(h.metadata.name as string),
        delete: (h) => queue.add(h.metadata.name as string),
      });
      const onReplica = (r: Replica) => {
        if (r.spec.host) queue.add(r.spec.host);
      };
      // Only a Replica that references ConfigMaps or Secrets counts in wantedAccess: one without
      // any (the common case) changes no host's grants by coming, going or changing, so it costs
      // no reconcile (each reads every Replica on the host: a burst of 1,000 would cost ~1,000).
      informers.replicas.addHandlers({
        add: (r) => {
          if (grants(r)) onReplica(r);
        },
        update: (old, r) => {
          if (!grants(old) && !grants(r)) return;
          if (grantKey(old) === grantKey(r)) return;
          onReplica(old);
          onReplica(r);
        },
        delete: (r) => {
          if (grants(r)) onReplica(r);
        },
      });
      for (const informer of [informers.roles, informers.roleBindings, informers.serviceAccounts] as const) {
        informer.addHandlers({
          add: (o: KubeObject) => {
            const h = accessKeys(o);
            if (h !== undefined) queue.add(h);
          },
          update: (_old: KubeObject, o: KubeObject) => {
            const h = accessKeys(o);
            if (h !== undefined) queue.add(h);
          },
          delete: (o: KubeObject) => {
            const h = accessKeys(o);
            if (h !== undefined) queue.add(h);
          },
        });
      }
    },

    async reconcile(host: string): Promise<ReconcileResult> {
      const name = hostAccountName(host);
      if (name.length > MAX_NAME) {
        log.error(
          { host, name },
          'host name too long for an account of its own: its replicas cannot read ConfigMaps or Secrets',
        );
        return undefined;
      }
      const mine = (o: KubeObject) => hostOfAccessObject(o) === host;
      if (!informers.hosts.get(host)) {
        // Gone, or only outside this operator's host selector: ask the API before removing anything.
        const exists = await clients.hosts.get(host).then(
          () => true,
          (err: unknown) => {
            if (isNotFound(err)) return false;
            throw err;
          },
        );
        if (exists) return undefined;
        for (const b of informers.roleBindings.list(mine)) {
          await ignoreNotFound(
            clients.roleBindings.delete(name, { namespace: b.metadata?.namespace as string }),
          );
        }
        for (const r of informers.roles.list(mine)) {
          await ignoreNotFound(clients.roles.delete(name, { namespace: r.metadata?.namespace as string }));
        }
        await ignoreNotFound(clients.serviceAccounts.delete(name, { namespace: SYSTEM_NAMESPACE }));
        log.info({ host }, 'host gone: its account and read grants removed');
        return undefined;
      }

      if (!informers.serviceAccounts.get(`${SYSTEM_NAMESPACE}/${name}`)) {
        await create(clients.serviceAccounts, {
          apiVersion: 'v1',
          kind: 'ServiceAccount',
          metadata: { name, namespace: SYSTEM_NAMESPACE, labels },
        });
      }

      const wanted = wantedAccess(replicasOnHost(ctx, host));
      for (const [namespace, rules] of wanted) {
        const role = informers.roles.get(`${namespace}/${name}`);
        if (!role) {
          await create(clients.roles, {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'Role',
            metadata: { name, namespace, labels },
            rules,
          });
          log.info({ host, namespace, rules }, 'granted a host read access');
        } else if (JSON.stringify(role.rules ?? []) !== JSON.stringify(rules)) {
          await clients.roles.replace({ ...role, rules } as Role, { namespace });
          log.info({ host, namespace, rules }, 'changed what a host may read');
        }
        const binding = informers.roleBindings.get(`${namespace}/${name}`);
        const subjects = [{ kind: 'ServiceAccount', name, namespace: SYSTEM_NAMESPACE }];
        const roleRef = { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name };
        const stale =
          binding !== undefined &&
          (JSON.stringify(binding.roleRef) !== JSON.stringify(roleRef) ||
            JSON.stringify(binding.subjects ?? []) !== JSON.stringify(subjects));
        // roleRef is immutable: a binding that says anything else is made again.
        if (stale) await ignoreNotFound(clients.roleBindings.delete(name, { namespace }));
        if (!binding || stale) {
          await create(clients.roleBindings, {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'RoleBinding',
            metadata: { name, namespace, labels },
            roleRef,
            subjects,
          });
        }
      }
      for (const role of informers.roles.list(mine)) {
        const namespace = role.metadata?.namespace as string;
        if (wanted.has(namespace)) continue;
        await ignoreNotFound(clients.roleBindings.delete(name, { namespace }));
        await ignoreNotFound(clients.roles.delete(name, { namespace }));
        log.info({ host, namespace }, 'a host no longer reads anything here: its Role removed');
      }
      for (const binding of informers.roleBindings.list(mine)) {
        const namespace = binding.metadata?.namespace as string;
        if (!wanted.has(namespace)) await ignoreNotFound(clients.roleBindings.delete(name, { namespace }));
      }
      return undefined;
    },
  };
}

async function create<T extends KubeObject>(client: ResourceClient<T>, obj: T): Promise<void> {
  await client
    .create(obj as never, { namespace: obj.metadata?.namespace as string })
    .catch((err: unknown) => {
      // The cache had not seen it yet: the informer's event reconciles again.
      if (!isAlreadyExists(err)) throw err;
    });
}
