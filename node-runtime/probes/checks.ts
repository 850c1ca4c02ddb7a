/**
 * One probe attempt: http (GET, 200-399 is success, as the kubelet), tcp (connect), exec (exit 0).
 * Every attempt is bounded by the timeout and never throws: failures come back as a result.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import type { ExecProbe, HttpProbe, ProbeResult, TcpProbe } from './types.ts';

// Not `import http from 'node:http'`: the ES module of node:http reads every export once, and one
// of them loads the bundled fetch (undici). This file is on the host agent's path to re-adoption.
const http = process.getBuiltinModule('node:http');

/**
 * Opens the probe's TCP connection somewhere else than the runtime's own network: set for a
 * replica with its own network namespace, whose 127.0.0.1 is not the host's (see
 * native netnsConnect). Rejects when the connection cannot be made.
 */
export type Connector = (host: string, port: number, timeoutMs: number) => Promise<net.Socket>;

export async function checkHttp(
  probe: HttpProbe,
  port: number,
  timeoutMs: number,
  connect?: Connector,
): Promise<ProbeResult> {
  const host = probe.host ?? '127.0.0.1';
  const path = probe.path ?? '/';
  const url = `http://${host}:${port}${path.startsWith('/') ? path : `/${path}`}`;
  const headers: Record<string, string> = { 'user-agent': 'orrery-probe/1', connection: 'close' };
  for (const h of probe.httpHeaders ?? []) headers[h.name.toLowerCase()] = h.value;
  const started = performance.now();
  let socket: net.Socket | undefined;
  if (connect) {
    try {
      socket = await connect(host, port, timeoutMs);
    } catch (err) {
      return { ok: false, message: `GET ${url}: ${(err as Error).message}` };
    }
  }
  const left = Math.max(1, Math.round(timeoutMs - (performance.now() - started)));
  return new Promise((resolve) => {
    // A fresh connection every time (agent:false, or our own socket): a probe must not reuse one,
    // or a wedged server could look alive.
    const how = socket ? { createConnection: () => socket as net.Socket } : { agent: false as const };
    const req = http.get(url, { ...how, headers, timeout: left }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      const ok = status >= 200 && status < 400;
      resolve(ok ? { ok } : { ok, message: `GET ${url}: HTTP ${status}` });
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ ok: false, message: `GET ${url}: ${err.message}` }));
  });
}

export function checkTcp(
  probe: TcpProbe,
  port: number,
  timeoutMs: number,
  connect?: Connector,
): Promise<ProbeResult> {
  const host = probe.host ?? '127.0.0.1';
  if (connect) {
    return connect(host, port, timeoutMs).then(
      (socket) => {
        socket.destroy();
        return { ok: true };
      },
      (err: Error) => ({ ok: false, message: `connect ${host}:${port}: ${err.message}` }),
    );
  }
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(
      () => finish({ ok: false, message: `connect ${host}:${port}: timed out after ${timeoutMs} ms` }),
      timeoutMs,
    );
    function finish(result: ProbeResult): void {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    }
    socket.once('connect', () => finish({ ok: true }));
    socket.once('error', (err) => finish({ ok: false, message: `connect ${host}:${port}: ${err.message}` }));
  });
}

/**
 * Runs the command from the host, with the process's environment and working directory. Unlike the
 * kubelet's exec (which enters the container), it does not join the replica's namespaces: with a
 * pid or net namespace it sees the host's, not the replica's (use an http or tcp probe there).
 */
export function checkExec(
  probe: ExecProbe,
  env: Record<string, string>,
  cwd: string | undefined,
  timeoutMs: number,
): Promise<ProbeResult> {
  const [file, ...args] = probe.command;
  if (file === undefined) return Promise.resolve({ ok: false, message: 'exec probe: command is empty' });
  return new Promise((resolve) => {
    execFile(file, args, { env, cwd, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err) => {
      if (err === null) return resolve({ ok: true });
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      const why = e.killed ? `timed out after ${timeoutMs} ms` : `exit ${String(e.code)}`;
      resolve({ ok: false, message: `exec ${probe.command.join(' ')}: ${why}` });
    });
  });
}
