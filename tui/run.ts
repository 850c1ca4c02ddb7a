// `orrery tui`: connect, start the informers, draw until the user quits. The UI never exits on
// its own: an unreachable API server is a banner, not an error.
import { render } from 'ink';
import { createElement as h } from 'react';
import { KubeApi, type KubeConfig } from '../kube/index.ts';
import { version } from '../platform/package.ts';
import { ClusterModel } from './model/cluster.ts';
import { initialState } from './model/state.ts';
import type { ViewId } from './model/views.ts';
import { App } from './views/app.ts';

export interface TuiOptions {
  kubeConfig: KubeConfig;
  /** The namespace shown at start; undefined for all namespaces. */
  namespace: string | undefined;
  readonly: boolean;
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
  const cluster = new ClusterModel({ api, namespace: opts.namespace }).start();
  const app = render(
    h(App, {
      cluster,
      initial: initialState({ view: opts.view, namespace: opts.namespace, readonly: opts.readonly }),
      info: { context: opts.kubeConfig.currentContext, server: opts.kubeConfig.cluster.server, version },
      stdout,
    }),
    {
      stdin,
      stdout,
      // ctrl-c is a key like `q`: the app quits through the same path.
      exitOnCtrlC: false,
      // A full-screen program, as k9s, top and less are: the shell's screen and scrollback come
      // back untouched on exit.
      alternateScreen: true,
      // The console is not ours to draw on: a stray log line would tear the frame.
      patchConsole: true,
      // Rewrite only the lines that changed (the ages tick every second), not the whole frame:
      // less to write, and nothing to flicker on a terminal without synchronized output.
      incrementalRendering: true,
    },
  );
  const stop = () => app.unmount();
  const signals = ['SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, stop);
  try {
    await app.waitUntilExit();
  } finally {
    for (const s of signals) process.off(s, stop);
    await cluster.stop();
  }
}
