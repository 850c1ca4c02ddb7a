// The ConfigMaps and Secrets a replica template reads (env valueFrom and envFrom, configMap and
// secret volumes, issue 19): the operator grants a host's account exactly these
// (operator/hostaccess/), and the runtime reports condition ConfigResolved only for templates
// that have any.
import type { ReplicaTemplate } from './types.ts';

export interface ConfigReferences {
  configMaps: Set<string>;
  secrets: Set<string>;
}

/**
 * Every ConfigMap and Secret name the template references, optional or not (an optional one that
 * exists is read too). Tolerates a template that was never validated (a hand-written Replica).
 */
export function configReferences(template: ReplicaTemplate | undefined): ConfigReferences {
  const refs: ConfigReferences = { configMaps: new Set(), secrets: new Set() };
  const processes = Array.isArray(template?.processes) ? template.processes : [];
  for (const v of Array.isArray(template?.volumes) ? template.volumes : []) {
    const cm = v?.configMap?.name;
    const secret = v?.secret?.secretName;
    if (typeof cm === 'string') refs.configMaps.add(cm);
    if (typeof secret === 'string') refs.secrets.add(secret);
  }
  for (const p of processes) {
    for (const e of Array.isArray(p?.env) ? p.env : []) {
      const cm = e?.valueFrom?.configMapKeyRef?.name;
      const secret = e?.valueFrom?.secretKeyRef?.name;
      if (typeof cm === 'string') refs.configMaps.add(cm);
      if (typeof secret === 'string') refs.secrets.add(secret);
    }
    for (const f of Array.isArray(p?.envFrom) ? p.envFrom : []) {
      const cm = f?.configMapRef?.name;
      const secret = f?.secretRef?.name;
      if (typeof cm === 'string') refs.configMaps.add(cm);
      if (typeof secret === 'string') refs.secrets.add(secret);
    }
  }
  return refs;
}

export function hasConfigReferences(template: ReplicaTemplate | undefined): boolean {
  const refs = configReferences(template);
  return refs.configMaps.size > 0 || refs.secrets.size > 0;
}
