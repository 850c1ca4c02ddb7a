// What each long-lived daemon loads when it starts, in one place: `orrery runtime`, `orrery
// operator` and `orrery proxy` load their code through these, and `orrery up` has all of it
// compiled into Node's compile cache (up-setup.ts) before it starts them.
//
// Why: from a checkout Node strips the TypeScript of every module its compile cache does not hold
// yet, and to do so loads its TypeScript transformer (a WebAssembly build of swc) into the
// process, which keeps it: ~12 MiB of resident memory for the daemon's life, measured on each of
// them. After a `git pull`, each daemon would also strip the modules they share (kube/,
// platform/) again, in parallel, on two cores.
import module from 'node:module';

export const loadAgent = () => import('../node-runtime/agent/index.ts');
/** What the agent loads itself once it has re-adopted its workloads (node-runtime/agent/start.ts). */
const agentAfterReadoption = () => import('../node-runtime/agent/agent.ts');

export const loadOperator = () =>
  Promise.all([
    import('../platform/log.ts'),
    import('../kube/index.ts'),
    import('../operator/metrics.ts'),
    import('../operator/operator.ts'),
  ]);

/** What every daemon loads beside its own code: its malloc arenas kept trimmed (platform/memory.ts). */
export const loadDaemonMemory = () => import('../platform/memory.ts');

export const loadProxy = () =>
  Promise.all([import('../platform/log.ts'), import('../kube/index.ts'), import('../mesh/proxy.ts')]);

/**
 * Loads every daemon's modules (without starting anything) and writes the compile cache now, so
 * that the daemons started next find them compiled. A no-op but for the loading when the cache is
 * off (NODE_DISABLE_COMPILE_CACHE) or already holds them (~70 ms then).
 */
export async function compileDaemons(): Promise<void> {
  await Promise.all([loadAgent(), agentAfterReadoption(), loadOperator(), loadProxy(), loadDaemonMemory()]);
  module.flushCompileCache?.();
}
