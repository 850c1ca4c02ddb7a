/**
 * One probe attempt: http (GET, 200-399 is success, as the kubelet), tcp (connect), exec (exit 0).
 * Every attempt is bounded by the timeout and never throws: failures come back as a result.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import type { ExecProbe, HttpProbe, ProbeResult, TcpProbe } from './types.ts';

export function checkHttp(probe: HttpProbe, port: number, timeoutMs: number): Promise<ProbeResult> {
  const host = probe.host ?? '127.0.0.1';
  const path = probe.path ?? '/';
  const url = `http://${host}:${port}${path.startsWith('/') ? path : `/${path}`}`;
  const headers: Record<string, string> = { 'user-agent': 'orrery-probe/1', connection: 'close' };
  for (const h of probe.httpHeaders ?? []) headers[h.name.toLowerCase()] = h.value;
  return new Promise((resolve) => {
    // agent:false: a probe must not reuse a connection, or a wedged server could look alive.
    const req = http.get(url, { agent: false, headers, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      const ok = status >= 200 && status < 400;
      resolve(ok ? { ok } : { ok, message: `GET ${url}: HTTP ${status}` });
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ ok: false, message: `GET ${url}: ${err.message}` }));
  });
}

export function checkTcp(probe: TcpProbe, port: number, timeoutMs: number): Promise<ProbeResult> {
  const host = probe.host ?? '127.0.0.1';
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
 * kubelet's exec (which enters the container), it does not join the replica's namespaces.
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
