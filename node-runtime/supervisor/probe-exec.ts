/**
 * An exec probe run inside its replica, as the kubelet runs one inside the container: in the
 * replica's namespaces (those it has), its cgroup (it counts against the limits and dies with the
 * replica) and its user, with the process's environment; like `nsenter -t PID -a` plus the cgroup.
 * A pid namespace can only be entered by a child, so with one the command runs under an
 * orrery-init that stays outside (as nsenter forks) and exits as the command did.
 */
import type { Namespace } from '../native/index.ts';
import type { ProbeResult } from '../probes/types.ts';
import { resolveCommand } from './command.ts';
import type { ExitStatus, ProcessApi, SpawnRequest } from './process-api.ts';

export interface ExecTarget {
  /** The probed process: its namespaces are joined. */
  pidfd: number;
  pid: number;
  namespaces: Namespace[];
  cgroup: SpawnRequest['cgroup'];
  env: string[];
  path: string;
  cwd?: string;
  user?: { uid: number; gid: number };
  /** The replica's workload root: the command is looked for there (the probe joins its mount namespace). */
  root?: string;
}

export function execInReplica(
  api: ProcessApi,
  target: ExecTarget,
  command: string[],
  timeoutMs: number,
): Promise<ProbeResult> {
  const what = `exec ${command.join(' ')}`;
  const name = command[0];
  if (name === undefined) return Promise.resolve({ ok: false, message: 'exec probe: command is empty' });
  let req: SpawnRequest;
  try {
    req = {
      file: resolveCommand(name, target.path, target.cwd, target.root),
      argv: command,
      env: target.env,
      namespaces: [],
      init: target.namespaces.includes('pid'),
      cgroup: target.cgroup,
      logFile: '/dev/null',
      joinNamespacesOf: { pidfd: target.pidfd, pid: target.pid, namespaces: target.namespaces },
    };
    if (target.cwd !== undefined) req.cwd = target.cwd;
    if (target.user) {
      req.uid = target.user.uid;
      req.gid = target.user.gid;
    }
  } catch (err) {
    return Promise.resolve({ ok: false, message: `${what}: ${(err as Error).message}` });
  }
  // Off the event loop, like every spawn of the runtime (a probe every few seconds per replica).
  return api.spawnAsync(req).then(
    (spawned) => watchProbe(api, spawned, what, timeoutMs),
    (err: Error) => ({ ok: false, message: `${what}: ${err.message}` }),
  );
}

function watchProbe(
  api: ProcessApi,
  spawned: Awaited<ReturnType<ProcessApi['spawnAsync']>>,
  what: string,
  timeoutMs: number,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The whole process group (the child called setsid): with a pid namespace the command runs
      // inside it under an orrery-init outside it, and SIGKILL to init alone would orphan the
      // command there (the kubelet's timed-out exec probes leave such processes behind). The
      // group id cannot be reused yet: init, its leader, is not reaped before watchExit fires.
      try {
        process.kill(-spawned.pid, 'SIGKILL');
      } catch {
        api.sendSignal(spawned.pidfd, 'SIGKILL');
      }
    }, timeoutMs);
    api.watchExit(spawned.pidfd, (status: ExitStatus) => {
      clearTimeout(timer);
      if (status.code === 0) return resolve({ ok: true });
      const why = timedOut
        ? `timed out after ${timeoutMs} ms`
        : status.signal
          ? `killed by ${status.signal}`
          : `exit ${status.code}`;
      resolve({ ok: false, message: `${what}: ${why}` });
    });
  });
}
