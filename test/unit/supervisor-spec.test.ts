import test from 'ava';
import { InvalidSpecError } from '../../node-runtime/invalid-spec.ts';
import {
  buildEnv,
  CommandNotFoundError,
  portEnvName,
  resolveCommand,
} from '../../node-runtime/supervisor/command.ts';
import { validateWorkloadSpec, type WorkloadSpec } from '../../node-runtime/supervisor/spec.ts';

const spec = (): WorkloadSpec => ({
  id: 'ns.web-0',
  name: 'web-0',
  processes: [
    {
      name: 'server',
      command: ['node', 'server.js'],
      restart: 'permanent',
      ports: [{ name: 'http-api', port: 8080 }],
    },
  ],
  supervision: {
    strategy: 'one-for-one',
    maxRestarts: 3,
    periodSeconds: 10,
    backoff: { initialSeconds: 1, maxSeconds: 60 },
  },
  terminationGracePeriodSeconds: 10,
  resources: {},
  isolation: { namespaces: ['pid', 'mount', 'uts', 'ipc'] },
});

test('a valid spec passes', (t) => {
  t.notThrows(() => validateWorkloadSpec(spec()));
});

test('validation errors name the field, the expectation and what was got', (t) => {
  const cases: [(s: WorkloadSpec) => void, RegExp][] = [
    [(s) => Object.assign(s, { id: 'Bad/Id' }), /spec\.id must be a DNS-1123 subdomain.*got "Bad\/Id"/],
    [
      (s) => Object.assign(s.processes[0] as object, { restart: 'always' }),
      /spec\.processes\[0\]\.restart must be one of permanent, transient, temporary, got "always"/,
    ],
    [
      (s) => Object.assign(s.processes[0] as object, { command: [] }),
      /spec\.processes\[0\]\.command must be a non-empty array/,
    ],
    [
      (s) => s.processes.push({ ...(s.processes[0] as WorkloadSpec['processes'][0]) }),
      /spec\.processes\[1\]\.name must be unique/,
    ],
    [
      (s) => Object.assign(s.supervision, { strategy: 'all-for-one' }),
      /spec\.supervision\.strategy must be one of/,
    ],
    [
      (s) => Object.assign(s.supervision.backoff, { maxSeconds: 0.5 }),
      /spec\.supervision\.backoff\.maxSeconds must be a number >= initialSeconds/,
    ],
    [
      (s) => Object.assign(s.isolation, { namespaces: ['pid', 'user'] }),
      /spec\.isolation\.namespaces must be a list of pid, mount, uts, ipc, net, got "user"/,
    ],
    [
      (s) => Object.assign(s.processes[0] as object, { stopSignal: 'TERM' }),
      /stopSignal must be a signal name/,
    ],
    [
      (s) => Object.assign(s, { annotations: { 'orrery.dev/replica-digest': 7 } }),
      /spec\.annotations must be an object of string values/,
    ],
  ];
  for (const [mutate, message] of cases) {
    const s = spec();
    mutate(s);
    t.throws(() => validateWorkloadSpec(s), { instanceOf: InvalidSpecError, message });
  }
});

test('commands resolve with execvp rules; a missing one is ExecFailed ENOENT', (t) => {
  t.is(resolveCommand('sh', '/nonexistent:/bin:/usr/bin', undefined), '/bin/sh');
  t.is(resolveCommand('/bin/sh', '', undefined), '/bin/sh');
  const err = t.throws(() => resolveCommand('no-such-command-xyz', '/bin:/usr/bin', undefined), {
    instanceOf: CommandNotFoundError,
  });
  t.is(err?.code, 'ENOENT');
  t.regex(err?.message ?? '', /^ExecFailed: ENOENT no-such-command-xyz/);
  t.throws(() => resolveCommand('/no/such/bin', '/bin', undefined), {
    message: /ExecFailed: ENOENT \/no\/such\/bin/,
  });
});

test('the environment: extraEnv < PORT < process env < ORRERY_* facts; nothing inherited', (t) => {
  const s = spec();
  s.extraEnv = [
    { name: 'WEB_SERVICE_HOST', value: '127.77.0.1' },
    { name: 'SHARED', value: 'from-agent' },
  ];
  const proc = {
    ...(s.processes[0] as WorkloadSpec['processes'][0]),
    env: [
      { name: 'SHARED', value: 'from-user' },
      { name: 'ORRERY_PROCESS', value: 'spoof' },
    ],
  };
  const env = buildEnv(s, proc, { 'http-api': 8080 });
  t.deepEqual(Object.fromEntries(env), {
    WEB_SERVICE_HOST: '127.77.0.1',
    SHARED: 'from-user',
    PORT: '8080',
    ORRERY_PROCESS: 'server',
    ORRERY_REPLICA: 'ns.web-0',
    ORRERY_REPLICA_NAME: 'web-0',
    ORRERY_PORT_HTTP_API: '8080',
  });
  t.is(portEnvName('metrics.v2'), 'ORRERY_PORT_METRICS_V2');
});
