import { readFileSync } from 'node:fs';
import test from 'ava';
import { isProcessName, PROCESS_NAME } from '../../crds/process-name.ts';
import { validateWorkloadSpec } from '../../node-runtime/supervisor/spec.ts';

test('the CRD checks process names with the same pattern the runtime uses', (t) => {
  const schema = readFileSync(new URL('../../crds/src/template.yaml', import.meta.url), 'utf8');
  t.true(schema.includes(`self.matches('${PROCESS_NAME.source}')`), 'template.yaml spells PROCESS_NAME');
});

test('a process name is a DNS label: no dot, no underscore, at most 63 characters', (t) => {
  for (const ok of ['web', 'a', 'web-2', 'x'.repeat(63)]) t.true(isProcessName(ok), ok);
  for (const bad of ['web.1', 'web_1', '-web', 'web-', 'Web', '', 'x'.repeat(64)])
    t.false(isProcessName(bad), bad);
  const spec = {
    id: 'ns.web-0',
    name: 'web-0',
    processes: [{ name: 'web.1', command: ['true'], restart: 'permanent' as const }],
    supervision: {
      strategy: 'one-for-one' as const,
      maxRestarts: 1,
      periodSeconds: 1,
      backoff: { initialSeconds: 1, maxSeconds: 1 },
    },
    terminationGracePeriodSeconds: 1,
    resources: {},
    isolation: { namespaces: [] },
  };
  t.throws(() => validateWorkloadSpec(spec), { message: /processes\[0\]\.name/ });
});
