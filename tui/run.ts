// `orrery tui`: connect, start the informers, draw until the user quits. The UI never exits on
// its own: an unreachable API server is a banner, not an error.
import { render } from 'ink';
import { createElement as h } from 'react';
import {
  isProxyLease,
  PROXY_EJECTED_ANNOTATION,
  PROXY_METRICS_ANNOTATION,
  SYSTEM_NAMESPACE,
} from '../crds/labels.ts';
import { KubeApi, type KubeConfig, leaseClient } from '../kube/index.ts';
import { version } from '../platform/package.ts';
import { type RuntimeTokenSource, scrapeHost } from '../platform/runtime-api.ts';
import { ClusterModel } from './model/cluster.ts';
import { RuntimeEventsModel } from './model/live.ts';
import { LogsModel } from './model/logs.ts';
import { MeshModel } from './model/mesh.ts';
import { RuntimeClients } from './model/runtime.ts';
import { initialState } from './model/state.ts';
import { UsageModel } from './model/usage.ts';
import type { ViewId } from './model/views.ts';
import { App } from './views/app.ts';

export interface TuiOptions {
  kubeConfig: KubeConfig;
  /** The namespace shown at start; undefined for all namespaces. */
  namespace: string | undefined;
  readonly: boolean;
  /** How the runtimes' token is found (logs, CPU and memory); the environment and local state dirs otherwise. */
  runtimeToken?: RuntimeTokenSource;
  view?: ViewId;
  stdin?: NodeJS.ReadStream;
  stdout?: NodeJS.WriteStream;
}

/** Draws until `q`, `:q`, ctrl-c, SIGTERM or SIGHUP; resolves once the terminal is restored and the watches are closed. */
export async function runTui(opts: TuiOptions): Promise<void> {
  const stdin = opts.stdin ?? process.stdin;
  const stdout = opts.stdout ?? process.stdout;
  if (!stdin.isTTY || !stdout.isTTY) {
    throw new Error('a terminal is needed: standard input and output must both be a TTY');
  }
  const api = await KubeApi.fromKubeConfig(opts.kubeConfig);
  // The usage and the runtime clients read the cluster's caches, which exist once it is made;
  // the usage is read only while the UI runs.
  let clients: RuntimeClients | undefined;
  const usage = new UsageModel({
    hosts: () => clients?.hosts() ?? [],
    token: (host) => (clients as RuntimeClients).token(host),
    scrape: scrapeHost,
  });
  // The mesh proxies that publish their metrics on their Leases: RPS and P99 of the Services view.
  const leases = leaseClient(api, 'orrery-tui');
  const mesh = new MeshModel({
    proxies: async () =>
      (await leases.list({ namespace: SYSTEM_NAMESPACE })).items.filter(isProxyLease).map((l) => ({
        metricsUrl: l.metadata?.annotations?.[PROXY_METRICS_ANNOTATION],
        ejected: l.metadata?.annotations?.[PROXY_EJECTED_ANNOTATION],
      })),
  });
  // The runtimes' event streams: exits and restarts before the API has them.
  const live = new RuntimeEventsModel({
    hosts: () => clients?.hosts() ?? [],
    token: (host) => (clients as RuntimeClients).token(host),
  });
  const cluster = new ClusterModel({ api, namespace: opts.namespace, usage, mesh, live }).start();
  clients = new RuntimeClients(cluster, opts.runtimeToken ?? {});
  const logs = new LogsModel({ access: clients });
  usage.start();
  mesh.start();
  live.start();
  const app = render(
    h(App, {
      cluster,
      initial: initialState({ view: opts.view, namespace: opts.namespace, readonly: opts.readonly }),
      info: { context: opts.kubeConfig.currentContext, server: opts.kubeConfig.cluster.server, version },
      stdout,
      logs,
    }),
    {
      stdin,
      stdout,
      // ctrl-c is a key like `q`: the app quits through the same path.
      exitOnCtrlC: false,
      // Both ends are a TTY (checked above): a live view, even where CI=true is set, which Ink
      // would otherwise take as "draw only the last frame, at exit".
      interactive: true,
      // A full-screen program, as k9s, top and less are: the shell's screen and scrollback come
      // back untouched on exit.
      alternateScreen: true,
      // The console is not ours to draw on: a stray log line would tear the frame.
      patchConsole: true,
      // Rewrite only the lines that changed (the ages tick every second), not the whole frame:
      // less to write, and nothing to flicker on a terminal without synchronized output.
      incrementalRendering: true,
      // Ink draws at most this often (its default, 30, holds a key that comes within 33 ms of the
      // last frame until that window ends: half the key → frame time at 200×50). The models
      // already bound how often they ask (the cache's changes per 30 ms, the log per 100 ms, the
      // runtimes' reads per second), so this only lets a key through sooner.
      maxFps: 60,
    },
  );
  const stop = () => app.unmount();
  const signals = ['SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, stop);
  try {
    await app.waitUntilExit();
  } finally {
    for (const s of signals) process.off(s, stop);
    logs.close();
    usage.stop();
    live.stop();
    mesh.stop();
    await cluster.stop();
  }
}
