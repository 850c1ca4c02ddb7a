// The `orrery` command (also `kubectl orrery`, as a kubectl plugin).
import { Command } from 'commander';
import { version } from '../platform/package.ts';
import { wholeNumberFlag } from './flags.ts';
import { logsCommand } from './logs.ts';
import { operatorCommand } from './operator.ts';
import { proxyCommand } from './proxy.ts';
import { runtimeCommand } from './runtime.ts';
import { topCommand } from './top.ts';
import { tuiCommand } from './tui.ts';

const program = new Command()
  .name('orrery')
  .description('Kubernetes-style operator shell over a local process runtime.')
  .version(version, '-v, --version', 'print the version')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('up')
  .description(
    'bring Orrery up on this machine: a local control plane (kube-apiserver + etcd), the CRDs, the operator, host runtimes and the mesh proxy (restarted if they die); prints the KUBECONFIG to use; Ctrl-C stops the runtimes with their workloads, the operator and the proxy, then the control plane (Ctrl-C again a second later kills at once); one up per data dir',
  )
  .option(
    '--data-dir <dir>',
    'where the control plane and the hosts keep their state (kept across restarts; default: $XDG_STATE_HOME/orrery/up)',
  )
  .option(
    '--port <port>',
    'API server port on 127.0.0.1 (0 picks a free one)',
    wholeNumberFlag('--port', 0, 65535),
    0,
  )
  .option('--hosts <n>', 'number of host runtimes to start', wholeNumberFlag('--hosts', 1, 16), 1)
  .option('--api-only', 'start only the control plane and the CRDs')
  .action(async (options: { dataDir?: string; port: number; hosts: number; apiOnly?: boolean }) => {
    // What its start allocated and freed, given back to the kernel (platform/memory.ts).
    (await import('../platform/memory.ts')).keepMallocTrimmed();
    const { up } = await import('./up.ts');
    await up(options);
  });

// What `up` asks of the API server, in a child process of its own (up-setup.ts); not for users.
program
  .command('up-setup', { hidden: true })
  .requiredOption('--mode <mode>', 'crds, start or renew')
  .requiredOption('--kubeconfig <file>', "the control plane's admin kubeconfig")
  .requiredOption('--data-dir <dir>', "up's data dir")
  .option(
    '--host <name>',
    'a host agent to write credentials for (repeatable)',
    (v: string, all: string[]) => [...all, v],
    [],
  )
  .action(async (options: { mode: string; kubeconfig: string; dataDir: string; host: string[] }) => {
    const { setup } = await import('./up-setup.ts');
    if (!['crds', 'start', 'renew'].includes(options.mode)) {
      console.error(`orrery up-setup: --mode must be crds, start or renew, got "${options.mode}"`);
      process.exitCode = 2;
      return;
    }
    try {
      await setup({ ...options, mode: options.mode as 'crds' | 'start' | 'renew', hosts: options.host });
    } catch (err) {
      console.error((err as Error).message);
      process.exitCode = 1;
    }
  });

program.addCommand(operatorCommand());
program.addCommand(runtimeCommand());
program.addCommand(proxyCommand());
program.addCommand(logsCommand());
program.addCommand(tuiCommand());
program.addCommand(topCommand());

program
  .command('version')
  .description('print the version')
  .action(() => console.log(version));

await program.parseAsync(process.argv);
