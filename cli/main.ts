// The `orrery` command (also `kubectl orrery`, as a kubectl plugin).
import { Command, InvalidArgumentError } from 'commander';
import { operatorCommand } from './operator.ts';
import { version } from './version.ts';

const program = new Command()
  .name('orrery')
  .description('Kubernetes-style operator shell over a local process runtime.')
  .version(version, '-v, --version', 'print the version')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('up')
  .description(
    'start a local control plane (kube-apiserver + etcd), install the Orrery CRDs and print the KUBECONFIG to use; Ctrl-C stops everything',
  )
  .option(
    '--data-dir <dir>',
    'where the control plane keeps etcd data, certificates and the kubeconfig (kept across restarts)',
  )
  .option('--port <port>', 'API server port on 127.0.0.1 (0 picks a free one)', parsePort, 0)
  .action(async (options: { dataDir?: string; port: number }) => {
    const { up } = await import('./up.ts');
    await up(options);
  });

program.addCommand(operatorCommand());

program
  .command('version')
  .description('print the version')
  .action(() => console.log(version));

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError(`expected an integer from 0 to 65535, got '${value}'`);
  }
  return port;
}

await program.parseAsync(process.argv);
