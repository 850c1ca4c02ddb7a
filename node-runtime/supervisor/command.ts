/**
 * What the workload is exec'd with: command[0] resolved to an absolute path (the addon execs a
 * path, never searches), and the environment as `K=V` strings.
 */
import { accessSync, constants, lstatSync, statSync } from 'node:fs';
import path from 'node:path';
import type { EnvVar, ProcessSpec, WorkloadSpec } from './spec.ts';

/** Mirrors the addon's SpawnError so an unresolvable command reports exactly like a failed exec. */
export class CommandNotFoundError extends Error {
  readonly code = 'ENOENT';
  readonly step = 'resolve';
  readonly path: string;
  constructor(command: string, searched?: string) {
    // A path is reported as the addon reports a failed execve; a bare name says where it looked.
    const where = searched === undefined ? '' : ` (not in PATH: ${shorten(searched)})`;
    super(`ExecFailed: ENOENT ${command}${where}`);
    this.name = 'CommandNotFoundError';
    this.path = command;
  }
}

function shorten(pathVar: string): string {
  return pathVar.length <= 120 ? pathVar : `${pathVar.slice(0, 117)}...`;
}

function isSymlink(file: string): boolean {
  try {
    return lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

function isExecutableFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * execvp(3) rules: a name with a slash is taken as a path (relative ones against the working
 * directory), otherwise each PATH entry is tried in order; an empty entry means the cwd. With a
 * workload `root`, the paths are the process's, inside it (its cwd defaults to `/` there), and
 * the file is looked for under `root`, where a symlink is taken as found: an absolute target (the
 * node's /usr/bin/python3 -> /etc/alternatives/...) means a path inside the root, which only the
 * process's own exec resolves, and which reports it if it is not there.
 */
export function resolveCommand(
  command: string,
  pathVar: string,
  cwd: string | undefined,
  root?: string,
): string {
  const base = cwd ?? (root === undefined ? process.cwd() : '/');
  const found = (file: string) =>
    root === undefined
      ? isExecutableFile(file)
      : isSymlink(path.join(root, file)) || isExecutableFile(path.join(root, file));
  if (command.includes('/')) {
    const file = path.resolve(base, command);
    if (!found(file)) throw new CommandNotFoundError(command);
    return file;
  }
  for (const dir of pathVar.split(':')) {
    const file = path.resolve(base, dir === '' ? '.' : dir, command);
    if (found(file)) return file;
  }
  throw new CommandNotFoundError(command, pathVar);
}

/** Port numbers of one process, by port name. */
export type ProcessPorts = Record<string, number>;

/** `ORRERY_PORT_HTTP_API` for a port named `http-api`. */
export function portEnvName(name: string): string {
  return `ORRERY_PORT_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/**
 * The environment, lowest precedence first: the agent's extraEnv (service discovery variables),
 * the process's own env (the user wins, as in Kubernetes), then the ORRERY_* facts the runtime
 * owns. PORT is set to the process's first port unless the user set it. Nothing is inherited.
 */
export function buildEnv(replica: WorkloadSpec, proc: ProcessSpec, ports: ProcessPorts): Map<string, string> {
  const env = new Map<string, string>();
  const put = (vars: EnvVar[] | undefined) => {
    for (const v of vars ?? []) env.set(v.name, v.value);
  };
  put(replica.extraEnv);
  const first = proc.ports?.[0];
  if (first !== undefined && ports[first.name] !== undefined) env.set('PORT', String(ports[first.name]));
  put(proc.env);
  env.set('ORRERY_REPLICA', replica.id);
  env.set('ORRERY_REPLICA_NAME', replica.name);
  env.set('ORRERY_PROCESS', proc.name);
  for (const [name, port] of Object.entries(ports)) env.set(portEnvName(name), String(port));
  return env;
}
