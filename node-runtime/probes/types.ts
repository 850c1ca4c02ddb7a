/**
 * Probe specs as in Kubernetes (https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/):
 * exactly one of http, tcp, exec; `port` may be a number or the name of one of the process's ports.
 */
export interface HttpProbe {
  path?: string;
  port: number | string;
  /** Defaults to 127.0.0.1: probes dial from the host, like the kubelet. */
  host?: string;
  scheme?: 'http';
  httpHeaders?: { name: string; value: string }[];
}

export interface TcpProbe {
  port: number | string;
  host?: string;
}

export interface ExecProbe {
  command: string[];
}

export interface ProbeSpec {
  http?: HttpProbe;
  httpGet?: HttpProbe;
  tcp?: TcpProbe;
  tcpSocket?: TcpProbe;
  exec?: ExecProbe;
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
  successThreshold?: number;
}

/** Kubernetes defaults for the probe timing fields. */
export const probeDefaults = {
  initialDelaySeconds: 0,
  periodSeconds: 10,
  timeoutSeconds: 1,
  failureThreshold: 3,
  successThreshold: 1,
} as const;

export interface ProbeResult {
  ok: boolean;
  /** One sentence on what failed, e.g. 'GET http://127.0.0.1:8080/healthz: 503'. */
  message?: string;
}
