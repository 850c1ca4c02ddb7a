// The environment a workload gets for the Services of its namespace, as kubelet sets it for a
// Pod's containers (pkg/kubelet/envvars): for a Service `web-api` with virtual IP 127.77.0.5 and
// ports `http` 80 and `admin` 81,
//   WEB_API_SERVICE_HOST=127.77.0.5  WEB_API_SERVICE_PORT=80
//   WEB_API_SERVICE_PORT_HTTP=80     WEB_API_SERVICE_PORT_ADMIN=81
// Only Services that have a virtual IP count; the variables are set when a process starts, so a
// Service created later is found through its name, as with Kubernetes. The process's own env wins.
import type { Service } from './types.ts';

export interface EnvVar {
  name: string;
  value: string;
}

/** `web-api` -> `WEB_API`: upper case, every character not allowed in a variable name as `_`. */
function envName(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
}

/** The variables for `services` (those of one namespace), sorted by Service name. */
export function serviceEnv(services: readonly Service[]): EnvVar[] {
  const out: EnvVar[] = [];
  const sorted = [...services].sort((a, b) => ((a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1));
  for (const service of sorted) {
    const host = service.status?.virtualIP;
    const first = service.spec.ports[0];
    if (!host || !first) continue;
    const prefix = envName(service.metadata.name as string);
    out.push({ name: `${prefix}_SERVICE_HOST`, value: host });
    out.push({ name: `${prefix}_SERVICE_PORT`, value: String(first.port) });
    for (const p of service.spec.ports) {
      out.push({ name: `${prefix}_SERVICE_PORT_${envName(p.name)}`, value: String(p.port) });
    }
  }
  return out;
}
