import type { KubeApi } from './api.ts';
import { isAlreadyExists, isForbidden, isNotFound } from './errors.ts';
import { NAMESPACES, resourceClient } from './resources.ts';

/**
 * Makes sure the namespace `name` exists. A GET first, so a process that finds it there (every
 * start but a cluster's first, and always a standby operator) makes no write; a create when it
 * is missing, where AlreadyExists (another process created it in between) counts as success.
 * A GET that RBAC forbids falls through to the create, whose answer decides.
 */
export async function ensureNamespace(api: KubeApi, name: string, fieldManager: string): Promise<void> {
  const namespaces = resourceClient(api, NAMESPACES, fieldManager);
  try {
    await namespaces.get(name);
    return;
  } catch (error) {
    if (!isNotFound(error) && !isForbidden(error)) throw error;
  }
  try {
    await namespaces.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
  }
}
