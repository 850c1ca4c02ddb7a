// `orrery tui` (also `kubectl orrery tui`): the terminal UI (tui/, docs/DESIGN.md §6.2). Its
// modules (Ink, React) load in the action, so `orrery --help` and `--version` do not pay for them.
import { Command, Option } from 'commander';

interface TuiFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  allNamespaces?: boolean;
  readonly?: boolean;
  token?: string;
  tokenFile?: string;
  stateDir?: string;
}

export function tuiCommand(): Command {
  return new Command('tui')
    .description(
      'a live terminal view of Instances, Replicas, Services, Hosts and Events, in the manner of k9s (press ? inside for the keys)',
    )
    .option('--kubeconfig <path>', 'kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)')
    .option('--context <name>', 'kubeconfig context (default: its current-context)')
    .option('-n, --namespace <namespace>', "namespace to show (default: the context's, else default)")
    .addOption(new Option('-A, --all-namespaces', 'show all namespaces').conflicts('namespace'))
    .option('--readonly', 'turn off every key that changes something (delete, scale)')
    .addOption(
      new Option('--token <token>', "the runtimes' API bearer token (logs, CPU, memory)").env(
        'ORRERY_RUNTIME_TOKEN',
      ),
    )
    .option('--token-file <path>', "file holding the runtimes' API bearer token")
    .option('--state-dir <dir>', "a runtime's state dir, to read its api-token from (same machine)")
    .action(async (flags: TuiFlags) => {
      // React's production build, as every Ink program should run: the development one checks and
      // records every element (bench/tui.bench.ts profiled: 2.2× the CPU over the same run). Set
      // before React loads, and left alone when the user set it.
      process.env.NODE_ENV ??= 'production';
      // The young generation held at 16 MiB once there (tui/heap.ts): frames' garbage would grow
      // it, and its pages stay resident.
      (await import('../tui/heap.ts')).capYoungGeneration();
      // What the start allocated and freed, given back to the kernel (platform/memory.ts).
      (await import('../platform/memory.ts')).keepMallocTrimmed();
      // Without fetch in sight, Yoga does not load Node's fetch to read its own WebAssembly (tui/modules.ts).
      const { withoutFetch } = await import('../tui/modules.ts');
      const [{ loadKubeConfig }, { runTui }] = await withoutFetch(() =>
        Promise.all([import('../kube/index.ts'), import('../tui/run.ts')]),
      );
      try {
        const kubeConfig = loadKubeConfig({ kubeconfig: flags.kubeconfig, context: flags.context });
        const namespace = flags.allNamespaces
          ? undefined
          : (flags.namespace ?? kubeConfig.context.namespace ?? 'default');
        await runTui({
          kubeConfig,
          namespace,
          readonly: Boolean(flags.readonly),
          runtimeToken: { token: flags.token, tokenFile: flags.tokenFile, stateDir: flags.stateDir },
        });
      } catch (err) {
        console.error(`orrery tui: ${(err as Error).message}`);
        process.exitCode = 1;
      }
    });
}
