/**
 * The files of a template's configMap and secret volumes (issue 19, part 2), read as the host's
 * own account (host-account.ts) at each start of the replica and again every VOLUME_SYNC_MS while
 * it runs, as the kubelet projects them (pkg/volume/configmap, secret): without items every key is
 * a file of its name; with items only those keys, at their paths, a listed key that is missing
 * being an error unless the volume is optional; a missing optional object is an empty volume.
 */
import type { ReplicaTemplate } from '../../crds/types.ts';
import type { VolumeFile } from '../volumes/atomic-writer.ts';
import { ConfigAccessError, type ConfigKind, type Unresolved, UnresolvedConfigError } from './config-env.ts';

export type ConfigFiles = {
  files(kind: ConfigKind, namespace: string, name: string): Promise<Record<string, Buffer> | undefined>;
};

/** The kubelet's default file mode (0644). */
const DEFAULT_MODE = 0o644;

/** Whether a template has configMap or secret volumes. */
export function hasFileVolumes(template: ReplicaTemplate): boolean {
  return (template.volumes ?? []).some((v) => v.configMap || v.secret);
}

/**
 * Per configMap or secret volume name, its files. `read` may share reads between replicas (the
 * sync does, per round). Throws UnresolvedConfigError naming every volume that cannot be filled.
 */
export async function resolveVolumeFiles(
  template: ReplicaTemplate,
  namespace: string,
  read: ConfigFiles,
): Promise<Map<string, VolumeFile[]>> {
  const out = new Map<string, VolumeFile[]>();
  const unresolved: Unresolved[] = [];
  for (const [i, v] of (template.volumes ?? []).entries()) {
    const source = v.configMap ?? v.secret;
    if (!source) continue;
    const kind: ConfigKind = v.configMap ? 'ConfigMap' : 'Secret';
    const name = v.configMap?.name ?? (v.secret?.secretName as string);
    const word = kind === 'ConfigMap' ? 'configmap' : 'secret';
    const where = `volumes[${i}] ${v.name}`;
    let data: Record<string, Buffer> | undefined;
    try {
      data = await read.files(kind, namespace, name);
    } catch (err) {
      unresolved.push({
        reason: err instanceof ConfigAccessError ? 'ConfigForbidden' : 'ConfigUnavailable',
        where,
        message:
          err instanceof ConfigAccessError
            ? err.message
            : `${word} "${name}" could not be read: ${(err as Error).message}`,
      });
      continue;
    }
    if (!data) {
      if (source.optional) out.set(v.name, []);
      else unresolved.push({ reason: 'ConfigMissing', where, message: `${word} "${name}" not found` });
      continue;
    }
    const defaultMode = source.defaultMode ?? DEFAULT_MODE;
    const files: VolumeFile[] = [];
    if (source.items?.length) {
      for (const item of source.items) {
        const bytes = data[item.key];
        if (bytes === undefined) {
          if (!source.optional) {
            unresolved.push({
              reason: 'ConfigMissing',
              where,
              message: `key "${item.key}" not found in ${word} ${namespace}/${name}`,
            });
          }
          continue;
        }
        files.push({ path: item.path, data: bytes, mode: item.mode ?? defaultMode });
      }
    } else {
      for (const [key, bytes] of Object.entries(data).sort(([a], [b]) => (a < b ? -1 : 1))) {
        files.push({ path: key, data: bytes, mode: defaultMode });
      }
    }
    out.set(v.name, files);
  }
  if (unresolved.length > 0) throw new UnresolvedConfigError(unresolved);
  return out;
}
