// The objects of a host's read access (controller.ts): their shapes, labels and names, apart
// from the controller so that the operator's context can make their informers.
import { ENDPOINT_SLICE_MANAGER, hostAccountName, MANAGED_BY_LABEL } from '../../crds/labels.ts';
import type { KubeObject } from '../../kube/index.ts';

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}
export type Role = KubeObject & { rules?: PolicyRule[] };
export type RoleBinding = KubeObject & {
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
};
export type ServiceAccount = KubeObject;

/** The label on what this controller makes (the value is the operator's field manager). */
export const HOST_ACCESS_SELECTOR = `${MANAGED_BY_LABEL}=${ENDPOINT_SLICE_MANAGER}`;
const PREFIX = hostAccountName('');
/** Object names are DNS subdomains: a host whose account name would be longer gets none. */
export const MAX_NAME = 253;

/** The host a Role, RoleBinding or ServiceAccount made here belongs to, from its name. */
export function hostOfAccessObject(o: KubeObject): string | undefined {
  const name = o.metadata?.name ?? '';
  return o.metadata?.labels?.[MANAGED_BY_LABEL] === ENDPOINT_SLICE_MANAGER && name.startsWith(PREFIX)
    ? name.slice(PREFIX.length)
    : undefined;
}

/**
 * The rules of one host's Role in one namespace: `get` on the named ConfigMaps and Secrets, sorted.
 * A kind with no names has no rule: an empty resourceNames would grant every object of the kind.
 */
export function accessRules(refs: { configMaps: Iterable<string>; secrets: Iterable<string> }): PolicyRule[] {
  const rules: PolicyRule[] = [];
  for (const [resource, names] of [
    ['configmaps', [...refs.configMaps]],
    ['secrets', [...refs.secrets]],
  ] as const) {
    if (names.length > 0) {
      rules.push({
        apiGroups: [''],
        resources: [resource],
        verbs: ['get'],
        resourceNames: [...names].sort(),
      });
    }
  }
  return rules;
}
