/**
 * Runs one probe of one process on a timer, kubelet-style: first attempt after
 * initialDelaySeconds, then every periodSeconds (attempts never overlap), each bounded by
 * timeoutSeconds; the verdict flips after successThreshold / failureThreshold consecutive results.
 */

import { InvalidSpecError } from '../invalid-spec.ts';
import { type Connector, checkExec, checkHttp, checkTcp } from './checks.ts';
import { initialThreshold, recordResult, type ThresholdState } from './threshold.ts';
import { type ProbeResult, type ProbeSpec, probeDefaults } from './types.ts';

export interface ProbeContext {
  /** Port numbers by port name, to resolve named probe ports. */
  ports: Record<string, number>;
  env: Record<string, string>;
  cwd?: string;
  /** How http and tcp probes connect when not from the host's network (a replica's own net namespace). */
  connect?: Connector;
  /** How exec probes run when not as a plain child of the runtime (inside the replica). */
  exec?: (command: string[], timeoutMs: number) => Promise<ProbeResult>;
}

export type ProbeVerdict = (healthy: boolean, message: string | undefined) => void;

export class ProbeRunner {
  readonly #spec: ProbeSpec;
  readonly #ctx: ProbeContext;
  readonly #onChange: ProbeVerdict;
  #state: ThresholdState = initialThreshold();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(spec: ProbeSpec, ctx: ProbeContext, onChange: ProbeVerdict) {
    this.#spec = spec;
    this.#ctx = ctx;
    this.#onChange = onChange;
  }

  start(): void {
    this.#schedule((this.#spec.initialDelaySeconds ?? probeDefaults.initialDelaySeconds) * 1000);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#attempt(), ms);
    this.#timer.unref();
  }

  async #attempt(): Promise<void> {
    const result = await runProbeOnce(this.#spec, this.#ctx);
    if (this.#stopped) return;
    const { state, changed } = recordResult(this.#state, result.ok, {
      successThreshold: this.#spec.successThreshold ?? probeDefaults.successThreshold,
      failureThreshold: this.#spec.failureThreshold ?? probeDefaults.failureThreshold,
    });
    this.#state = state;
    if (changed && state.healthy !== undefined) this.#onChange(state.healthy, result.message);
    this.#schedule((this.#spec.periodSeconds ?? probeDefaults.periodSeconds) * 1000);
  }
}

export function runProbeOnce(spec: ProbeSpec, ctx: ProbeContext): Promise<ProbeResult> {
  const timeoutMs = (spec.timeoutSeconds ?? probeDefaults.timeoutSeconds) * 1000;
  const httpProbe = spec.http ?? spec.httpGet;
  const tcpProbe = spec.tcp ?? spec.tcpSocket;
  try {
    if (httpProbe) return checkHttp(httpProbe, resolvePort(httpProbe.port, ctx), timeoutMs, ctx.connect);
    if (tcpProbe) return checkTcp(tcpProbe, resolvePort(tcpProbe.port, ctx), timeoutMs, ctx.connect);
    if (spec.exec)
      return ctx.exec
        ? ctx.exec(spec.exec.command, timeoutMs)
        : checkExec(spec.exec, ctx.env, ctx.cwd, timeoutMs);
  } catch (err) {
    return Promise.resolve({ ok: false, message: (err as Error).message });
  }
  return Promise.resolve({ ok: false, message: 'probe has none of http, tcp, exec' });
}

function resolvePort(port: number | string, ctx: ProbeContext): number {
  if (typeof port === 'number') return port;
  const n = ctx.ports[port];
  if (n === undefined) {
    throw new InvalidSpecError(
      `probe port "${port}" names no port of the process (have: ${Object.keys(ctx.ports).join(', ') || 'none'})`,
    );
  }
  return n;
}
