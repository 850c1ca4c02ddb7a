// The Orrery API as the real kube-apiserver serves it: CRD schemas, CEL rules, printer columns,
// kubectl explain and the scale subresource. Runs against the run-wide control plane.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { stringify } from 'yaml';
import { freshNamespace } from '../helpers/cluster.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { eventually } from '../helpers/wait.ts';

const examplesDir = join(import.meta.dirname, '..', '..', 'examples');
let kubeconfig = '';

test.before(async () => {
  ({ kubeconfig } = await orreryCluster());
});

function kubectl(args: string[], input?: string) {
  const result = spawnSync('kubectl', ['--kubeconfig', kubeconfig, ...args], { input, encoding: 'utf8' });
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

function ok(args: string[], input?: string): string {
  const result = kubectl(args, input);
  if (result.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

test('every example applies as written and kubectl get shows the printer columns', async (t) => {
  const ns = await freshNamespace(t);
  for (const file of readdirSync(examplesDir).filter((f) => f.endsWith('.yaml'))) {
    ok(['apply', '--validate=strict', '-n', ns, '-f', join(examplesDir, file)]);
  }
  const instances = ok(['get', 'inst', '-n', ns]);
  t.regex(instances, /^NAME\s+DESIRED\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+STATUS\s+CPU\s+AGE/m);
  t.regex(instances, /^web\s+3\s/m);
  t.regex(instances, /^hello\s+1\s/m);
  t.regex(
    ok(['get', 'osvc', '-n', ns]),
    /^NAME\s+VIRTUAL-IP\s+READY\s+ENDPOINTS\s+EJECTED\s+POLICY\s+AGE\n(.*\n)*web\s+.*least-request/m,
  );

  // Replicas and Hosts are written by the operator and the runtimes; create one of each by hand
  // to see their columns.
  ok(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Host',
      metadata: { name: `${ns}-host` },
      spec: { unschedulable: false },
    }),
  );
  t.teardown(() => kubectl(['delete', 'host', `${ns}-host`, '--wait=false']));
  ok(
    ['apply', '-n', ns, '-f', '-'],
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Replica',
      metadata: { name: 'hello-0' },
      spec: {
        instance: 'hello',
        ordinal: 0,
        host: `${ns}-host`,
        template: { processes: [{ name: 'a', command: ['true'] }] },
      },
    }),
  );
  t.regex(
    ok(['get', 'rep', '-n', ns]),
    /^NAME\s+PHASE\s+READY\s+RESTARTS\s+HOST\s+AGE\nhello-0\s+.*\s+\S+-host\s/m,
  );
  t.regex(ok(['get', 'hosts']), /^NAME\s+READY\s+UNSCHEDULABLE\s+ADDRESS\s+CGROUP\s+REPLICAS\s+AGE/m);
  const all = ok(['get', 'inst,rep,osvc,hosts', '-n', ns]);
  for (const kind of [
    'instance.orrery.dev/web',
    'replica.orrery.dev/hello-0',
    'service.orrery.dev/web',
    'host.orrery.dev/',
  ]) {
    t.true(all.includes(kind), `kubectl get inst,rep,osvc,hosts lists ${kind}`);
  }
});

test('kubectl explain teaches the API from the schema descriptions', async (t) => {
  // The API server publishes a CRD's OpenAPI schema a moment after the CRD is Established (and
  // again after every CRD update, as each test file's install does): explain may miss it at first.
  const explained = await eventually(
    'kubectl explain to know the Instance schema',
    () => {
      const attempt = kubectl(['explain', 'instance.spec.template.processes']);
      if (attempt.code === 0) return attempt.stdout;
      throw new Error(attempt.stderr);
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  );
  t.regex(explained, /GROUP:\s+orrery\.dev/);
  t.regex(explained, /started in this order and stopped in reverse\s+order/);
  for (const field of ['command', 'restart', 'readinessProbe', 'stopSignal'])
    t.regex(explained, new RegExp(`^\\s+${field}\\s`, 'm'));
  t.regex(ok(['explain', 'osvc.spec.outlierDetection']), /Envoy semantics/);
  // Every field of env valueFrom and envFrom, documented (issue 19).
  const env = ok(['explain', 'instance.spec.template.processes.env', '--recursive']);
  for (const field of ['valueFrom', 'configMapKeyRef', 'secretKeyRef', 'key', 'optional'])
    t.regex(env, new RegExp(`^\\s+${field}\\s`, 'm'), `explain --recursive lists ${field}`);
  t.regex(
    ok(['explain', 'instance.spec.template.processes.env.valueFrom.secretKeyRef.optional']),
    /the replica waits, Pending, until both exist/,
  );
  t.regex(
    ok(['explain', 'instance.spec.template.processes.env.valueFrom']),
    /one key of a ConfigMap or a Secret/,
  );
  const envFrom = ok(['explain', 'instance.spec.template.processes.envFrom']);
  t.regex(envFrom, /A later entry\s+overrides an earlier one/);
  for (const field of ['prefix', 'configMapRef', 'secretRef'])
    t.regex(envFrom, new RegExp(`^\\s+${field}\\s`, 'm'), `explain envFrom lists ${field}`);
  t.regex(ok(['explain', 'instance.spec.template.processes.envFrom.secretRef.name']), /DNS subdomain/);
  // Every field of volumes and volumeMounts, documented (issue 19, parts 2 and 3).
  const vols = ok(['explain', 'instance.spec.template.volumes', '--recursive']);
  for (const field of [
    'name',
    'configMap',
    'secret',
    'secretName',
    'items',
    'key',
    'path',
    'mode',
    'defaultMode',
    'optional',
    'emptyDir',
    'medium',
    'sizeLimit',
  ])
    t.regex(vols, new RegExp(`^\\s+${field}\\s`, 'm'), `explain volumes --recursive lists ${field}`);
  t.regex(ok(['explain', 'instance.spec.template.volumes.emptyDir.medium']), /EmptyDirSizeLimitExceeded/);
  // Per-replica persistent data (issue 19, part 4).
  t.regex(vols, /^\s+persistent\s/m, 'explain volumes --recursive lists persistent');
  const persistent = ok(['explain', 'instance.spec.template.volumes.persistent']);
  t.regex(persistent, /volumeClaimTemplates/);
  t.regex(persistent, /lost with it/);
  const retention = ok(['explain', 'instance.spec.persistentRetentionPolicy', '--recursive']);
  for (const field of ['whenDeleted', 'whenScaled'])
    t.regex(retention, new RegExp(`^\\s+${field}\\s`, 'm'), `explain lists ${field}`);
  t.regex(ok(['explain', 'instance.spec.persistentRetentionPolicy.whenScaled']), /Retain/);
  t.regex(ok(['explain', 'host.status.persistentData', '--recursive']), /^\s+ordinal\s/m);
  // hostPath (issue 19, part 5).
  t.regex(vols, /^\s+hostPath\s/m, 'explain volumes --recursive lists hostPath');
  const hostPath = ok(['explain', 'instance.spec.template.volumes.hostPath', '--recursive']);
  for (const field of ['path', 'type'])
    t.regex(hostPath, new RegExp(`^\\s+${field}\\s`, 'm'), `explain hostPath lists ${field}`);
  t.regex(ok(['explain', 'instance.spec.template.volumes.hostPath']), /orrery\.dev\/host-paths/);
  t.regex(ok(['explain', 'instance.spec.template.volumes.hostPath.path']), /symbolic\s+links/);
  t.regex(ok(['explain', 'instance.spec.template.volumes.hostPath.type']), /DirectoryOrCreate/);
  t.regex(
    ok(['explain', 'instance.spec.template.processes.volumeMounts.readOnly']),
    /hostPath\s+volume\s+is\s+read-only\s+unless\s+this\s+is\s+false/,
  );
  t.regex(ok(['explain', 'instance.spec.template.volumes.secret']), /never written to disk/);
  const mounts = ok(['explain', 'instance.spec.template.processes.volumeMounts', '--recursive']);
  for (const field of ['name', 'mountPath', 'readOnly', 'subPath'])
    t.regex(mounts, new RegExp(`^\\s+${field}\\s`, 'm'), `explain volumeMounts --recursive lists ${field}`);
  t.regex(ok(['explain', 'instance.spec.template.processes.volumeMounts']), /always gets one/);
});

test('kubectl scale changes spec.replicas through the scale subresource', async (t) => {
  const ns = await freshNamespace(t);
  ok(['apply', '-n', ns, '-f', join(examplesDir, 'web.yaml')]);
  ok(['scale', '-n', ns, 'inst', 'web', '--replicas=5']);
  t.is(ok(['get', '-n', ns, 'inst', 'web', '-o', 'jsonpath={.spec.replicas}']), '5');
  const scale = JSON.parse(
    ok(['get', '--raw', `/apis/orrery.dev/v1alpha1/namespaces/${ns}/instances/web/scale`]),
  );
  t.is(scale.kind, 'Scale');
  t.is(scale.spec.replicas, 5);
});

test('defaults from the schema are filled in by the API server', async (t) => {
  const ns = await freshNamespace(t);
  ok(['apply', '-n', ns, '-f', join(examplesDir, 'hello.yaml')]);
  const hello = JSON.parse(ok(['get', '-n', ns, 'inst', 'hello', '-o', 'json']));
  const template = hello.spec.template;
  t.is(template.processes[0].restart, 'permanent');
  t.is(template.processes[0].stopSignal, 'SIGTERM');
  t.deepEqual(template.supervision, {
    strategy: 'one-for-one',
    maxRestarts: 3,
    periodSeconds: 10,
    backoff: { initialSeconds: 1, maxSeconds: 60 },
  });
  t.deepEqual(template.isolation.namespaces, ['pid', 'mount', 'uts', 'ipc']);
  t.is(template.terminationGracePeriodSeconds, 10);
  t.deepEqual(hello.spec.updateStrategy, { maxUnavailable: 1, maxSurge: 0 });
});

// ---- invalid input is rejected with a message that names the field ----

// biome-ignore lint/suspicious/noExplicitAny: the table below mutates manifests field by field, at any depth
type Manifest = Record<string, any>;

function instance(mutate: (spec: Manifest) => void): Manifest {
  const spec: Manifest = {
    replicas: 2,
    template: {
      processes: [
        { name: 'server', command: ['sleep', 'infinity'], ports: [{ name: 'http', protocol: 'http' }] },
        {
          name: 'worker',
          command: ['sleep', 'infinity'],
          // Valid references (issue 19): the invalid ones below are each one mutation away.
          env: [
            { name: 'A', value: '', valueFrom: { configMapKeyRef: { name: 'cfg.v1', key: '.a_b-c.d' } } },
            { name: 'B', valueFrom: { secretKeyRef: { name: 'db', key: 'password', optional: true } } },
          ],
          envFrom: [
            { prefix: 'CFG_', configMapRef: { name: 'cfg' } },
            { secretRef: { name: 'db', optional: false } },
          ],
          // Valid volume mounts (issue 19, part 2 and 3).
          volumeMounts: [
            { name: 'config', mountPath: '/etc/app' },
            { name: 'creds', mountPath: '/run/creds', readOnly: true },
            { name: 'scratch', mountPath: '/var/tmp/x' },
          ],
        },
      ],
      volumes: [
        {
          name: 'config',
          configMap: { name: 'cfg', items: [{ key: 'a.conf', path: 'conf/a.conf', mode: 0o600 }] },
        },
        { name: 'creds', secret: { secretName: 'db', defaultMode: 0o400, optional: true } },
        { name: 'scratch', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
        { name: 'disk', emptyDir: {} },
        { name: 'data', persistent: {} },
      ],
      resources: { cpu: '100m', memory: '32Mi', pids: 16 },
    },
  };
  mutate(spec);
  return { apiVersion: 'orrery.dev/v1alpha1', kind: 'Instance', metadata: { name: 'bad' }, spec };
}

function service(mutate: (spec: Manifest) => void): Manifest {
  const spec: Manifest = {
    selector: { app: 'web' },
    ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'http' }],
  };
  mutate(spec);
  return { apiVersion: 'orrery.dev/v1alpha1', kind: 'Service', metadata: { name: 'bad' }, spec };
}

const processes = (spec: Manifest) => spec.template.processes as Manifest[];
const first = (spec: Manifest) => processes(spec)[0] as Manifest;
const second = (spec: Manifest) => processes(spec)[1] as Manifest;
const volumes = (spec: Manifest) => spec.template.volumes as Manifest[];
const vol = (spec: Manifest, i: number) => volumes(spec)[i] as Manifest;

const invalid: Array<{ what: string; manifest: Manifest; field: string; says?: RegExp }> = [
  {
    what: 'missing command',
    manifest: instance((s) => delete first(s).command),
    field: 'spec.template.processes[0].command',
    says: /Required value/,
  },
  {
    what: 'empty command',
    manifest: instance((s) => (first(s).command = [])),
    field: 'spec.template.processes[0].command',
    says: /at least 1 item/,
  },
  {
    what: 'empty program name',
    manifest: instance((s) => (first(s).command = [''])),
    field: 'spec.template.processes[0].command',
    says: /must not be empty/,
  },
  {
    what: 'no processes',
    manifest: instance((s) => (s.template.processes = [])),
    field: 'spec.template.processes',
    says: /at least 1 item/,
  },
  {
    what: 'duplicate process names',
    manifest: instance((s) => ((processes(s)[1] as Manifest).name = 'server')),
    field: 'spec.template.processes',
    says: /process names must be unique/,
  },
  {
    what: 'process name unusable as a file name',
    manifest: instance((s) => (first(s).name = '../etc')),
    field: 'spec.template.processes[0].name',
    says: /a DNS label/,
  },
  {
    what: "process name with a '.' or '_' (the runtime's rule: a DNS label)",
    manifest: instance((s) => (first(s).name = 'web.worker_1')),
    field: 'spec.template.processes[0].name',
    says: /a DNS label/,
  },
  {
    what: 'template over 128 KiB of command, args and env (5 values of 32 KiB)',
    manifest: instance((s) => {
      first(s).env = Array.from({ length: 5 }, (_, i) => ({ name: `BIG_${i}`, value: 'x'.repeat(32768) }));
    }),
    field: 'spec.template.processes',
    says: /at most 131072 characters/,
  },
  {
    what: 'Instance name of 64 characters (its Replicas could not carry it as a label)',
    manifest: { ...instance(() => {}), metadata: { name: `bad-${'x'.repeat(60)}` } },
    field: 'metadata.name',
    says: /at most 57 characters/,
  },
  {
    what: 'a user namespace uid past its 65536 ids',
    manifest: instance((s) => (s.template.isolation = { user: { uid: 70000 } })),
    field: 'spec.template.isolation.user',
    says: /0-65535 inside the replica's user namespace/,
  },
  {
    what: 'bad memory quantity',
    manifest: instance((s) => (s.template.resources.memory = '12 Mi')),
    field: 'spec.template.resources.memory',
    says: /quantity/,
  },
  {
    what: 'bad cpu quantity',
    manifest: instance((s) => (s.template.resources.cpu = 'lots')),
    field: 'spec.template.resources.cpu',
    says: /positive quantity/,
  },
  {
    what: 'negative replicas',
    manifest: instance((s) => (s.replicas = -1)),
    field: 'spec.replicas',
    says: /greater than or equal to 0/,
  },
  {
    what: 'unknown restart type',
    manifest: instance((s) => (first(s).restart = 'always')),
    field: 'spec.template.processes[0].restart',
    says: /Unsupported value: "always"/,
  },
  {
    what: 'unknown strategy',
    manifest: instance((s) => (s.template.supervision = { strategy: 'all-for-one' })),
    field: 'spec.template.supervision.strategy',
    says: /Unsupported value/,
  },
  {
    what: 'port out of range',
    manifest: instance((s) => (first(s).ports[0].port = 70000)),
    field: 'spec.template.processes[0].ports[0].port',
    says: /less than or equal to 65535/,
  },
  {
    what: 'duplicate port names',
    manifest: instance((s) => first(s).ports.push({ name: 'http' })),
    field: 'spec.template.processes[0].ports',
    says: /port names must be unique/,
  },
  {
    what: 'unknown field under strict validation',
    manifest: instance((s) => (first(s).comand = ['x'])),
    field: 'spec.template.processes[0].comand',
    says: /unknown field/,
  },
  {
    what: 'maxUnavailable and maxSurge both 0',
    manifest: instance((s) => (s.updateStrategy = { maxUnavailable: 0, maxSurge: 0 })),
    field: 'spec.updateStrategy',
    says: /must not both be 0/,
  },
  {
    what: 'minReplicas above maxReplicas',
    manifest: instance((s) => (s.autoscale = { minReplicas: 5, maxReplicas: 2 })),
    field: 'spec.autoscale',
    says: /minReplicas must not exceed maxReplicas/,
  },
  {
    what: 'cpu utilisation over 100 percent',
    manifest: instance((s) => (s.autoscale = { minReplicas: 1, maxReplicas: 2, cpuUtilization: 150 })),
    field: 'spec.autoscale.cpuUtilization',
    says: /less than or equal to 100/,
  },
  {
    what: 'probe with two handlers',
    manifest: instance((s) => (first(s).readinessProbe = { http: { port: 'http' }, tcp: { port: 'http' } })),
    field: 'spec.template.processes[0].readinessProbe',
    says: /exactly one of http, tcp or exec/,
  },
  {
    what: 'relative working directory',
    manifest: instance((s) => (first(s).workingDir = 'srv')),
    field: 'spec.template.processes[0].workingDir',
    says: /absolute path/,
  },
  {
    what: 'backoff initial above max',
    manifest: instance(
      (s) => (s.template.supervision = { backoff: { initialSeconds: 120, maxSeconds: 60 } }),
    ),
    field: 'spec.template.supervision',
    says: /must not exceed backoff.maxSeconds/,
  },
  {
    what: 'unknown namespace kind',
    manifest: instance((s) => (s.template.isolation = { namespaces: ['pid', 'time'] })),
    field: 'spec.template.isolation.namespaces[1]',
    says: /Unsupported value: "time"/,
  },
  {
    what: 'env with both a value and a valueFrom',
    manifest: instance((s) => {
      first(s).env = [
        { name: 'DB', value: 'x', valueFrom: { secretKeyRef: { name: 'db', key: 'password' } } },
      ];
    }),
    field: 'spec.template.processes[0].env[0].valueFrom',
    says: /may not be set when value is not empty/,
  },
  {
    what: 'valueFrom naming both a ConfigMap and a Secret',
    manifest: instance((s) => {
      first(s).env = [
        {
          name: 'DB',
          valueFrom: { configMapKeyRef: { name: 'a', key: 'k' }, secretKeyRef: { name: 'b', key: 'k' } },
        },
      ];
    }),
    field: 'spec.template.processes[0].env[0].valueFrom',
    says: /exactly one of configMapKeyRef and secretKeyRef/,
  },
  {
    what: 'valueFrom naming neither',
    manifest: instance((s) => (first(s).env = [{ name: 'DB', valueFrom: {} }])),
    field: 'spec.template.processes[0].env[0].valueFrom',
    says: /exactly one of configMapKeyRef and secretKeyRef/,
  },
  {
    what: 'a Secret name that is not a DNS subdomain',
    manifest: instance((s) => {
      first(s).env = [{ name: 'DB', valueFrom: { secretKeyRef: { name: 'Db_Creds', key: 'password' } } }];
    }),
    field: 'spec.template.processes[0].env[0].valueFrom.secretKeyRef.name',
    says: /should match/,
  },
  {
    what: "a ConfigMap key starting with '..'",
    manifest: instance((s) => {
      first(s).env = [{ name: 'A', valueFrom: { configMapKeyRef: { name: 'cfg', key: '..data' } } }];
    }),
    field: 'spec.template.processes[0].env[0].valueFrom.configMapKeyRef.key',
    says: /should match/,
  },
  {
    what: 'a key with a slash',
    manifest: instance((s) => {
      first(s).env = [{ name: 'A', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'a/b' } } }];
    }),
    field: 'spec.template.processes[0].env[0].valueFrom.configMapKeyRef.key',
    says: /should match/,
  },
  {
    what: 'a key selector without its key',
    manifest: instance((s) => {
      first(s).env = [{ name: 'A', valueFrom: { configMapKeyRef: { name: 'cfg' } } }];
    }),
    field: 'spec.template.processes[0].env[0].valueFrom.configMapKeyRef.key',
    says: /Required value/,
  },
  {
    what: 'envFrom with both a ConfigMap and a Secret',
    manifest: instance(
      (s) => (first(s).envFrom = [{ configMapRef: { name: 'a' }, secretRef: { name: 'b' } }]),
    ),
    field: 'spec.template.processes[0].envFrom[0]',
    says: /exactly one of configMapRef and secretRef/,
  },
  {
    what: 'envFrom naming a Secret that is not a DNS subdomain',
    manifest: instance((s) => (first(s).envFrom = [{ secretRef: { name: '-db' } }])),
    field: 'spec.template.processes[0].envFrom[0].secretRef.name',
    says: /should match/,
  },
  {
    what: 'envFrom with a prefix that is no variable name',
    manifest: instance((s) => (first(s).envFrom = [{ prefix: '1X=', configMapRef: { name: 'cfg' } }])),
    field: 'spec.template.processes[0].envFrom[0].prefix',
    says: /should match/,
  },
  {
    what: 'two volumes with the same name',
    manifest: instance((s) => volumes(s).push({ name: 'config', emptyDir: {} })),
    field: 'spec.template.volumes[5]',
    says: /Duplicate value/,
  },
  {
    what: 'a volume of two kinds',
    manifest: instance((s) => (vol(s, 3).secret = { secretName: 'db' })),
    field: 'spec.template.volumes[3]',
    says: /exactly one of configMap, secret, emptyDir, persistent and hostPath/,
  },
  {
    what: 'a persistent volume that is also an emptyDir',
    manifest: instance((s) => (vol(s, 4).emptyDir = {})),
    field: 'spec.template.volumes[4]',
    says: /exactly one of configMap, secret, emptyDir, persistent and hostPath/,
  },
  {
    what: 'a hostPath volume that is also an emptyDir',
    manifest: instance((s) =>
      volumes(s).push({ name: 'host', hostPath: { path: '/var/log' }, emptyDir: {} }),
    ),
    field: 'spec.template.volumes[5]',
    says: /exactly one of configMap, secret, emptyDir, persistent and hostPath/,
  },
  {
    what: 'a hostPath without a path',
    manifest: instance((s) => volumes(s).push({ name: 'host', hostPath: {} })),
    field: 'spec.template.volumes[5].hostPath.path',
    says: /Required value/,
  },
  {
    what: 'a relative hostPath path',
    manifest: instance((s) => volumes(s).push({ name: 'host', hostPath: { path: 'var/log' } })),
    field: 'spec.template.volumes[5].hostPath.path',
    says: /should match/,
  },
  {
    what: 'a hostPath path with a .. element',
    manifest: instance((s) => volumes(s).push({ name: 'host', hostPath: { path: '/var/log/../../etc' } })),
    field: 'spec.template.volumes[5].hostPath.path',
    says: /should match/,
  },
  {
    what: 'a hostPath path of /',
    manifest: instance((s) => volumes(s).push({ name: 'host', hostPath: { path: '/' } })),
    field: 'spec.template.volumes[5].hostPath.path',
    says: /should be at least 2 chars long|should match/,
  },
  {
    what: 'a hostPath type that is not checked (Socket)',
    manifest: instance((s) =>
      volumes(s).push({ name: 'host', hostPath: { path: '/run/x.sock', type: 'Socket' } }),
    ),
    field: 'spec.template.volumes[5].hostPath.type',
    says: /Unsupported value: "Socket"/,
  },
  {
    what: 'an unknown persistentRetentionPolicy',
    manifest: instance((s) => (s.persistentRetentionPolicy = { whenScaled: 'Keep' })),
    field: 'spec.persistentRetentionPolicy.whenScaled',
    says: /Unsupported value: "Keep"/,
  },
  {
    what: 'whenDeleted Delete with whenScaled Retain',
    manifest: instance((s) => (s.persistentRetentionPolicy = { whenDeleted: 'Delete' })),
    field: 'spec.persistentRetentionPolicy',
    says: /set whenScaled to Delete too/,
  },
  {
    what: "the operator's persistent-data annotation in the template",
    manifest: instance(
      (s) => (s.template.metadata = { annotations: { 'orrery.dev/persistent-data': 'Delete' } }),
    ),
    field: 'spec.template.metadata.annotations',
    says: /is the operator's/,
  },
  {
    what: 'a volume name that is not a DNS label',
    manifest: instance((s) => (vol(s, 3).name = 'Disk_1')),
    field: 'spec.template.volumes[3].name',
    says: /should match/,
  },
  {
    what: 'a mount naming an unknown volume',
    manifest: instance((s) => second(s).volumeMounts.push({ name: 'nope', mountPath: '/nope' })),
    field: 'spec.template.processes',
    says: /must name one of the template's volumes/,
  },
  {
    what: 'a relative mountPath',
    manifest: instance((s) => (second(s).volumeMounts[0].mountPath = 'etc/app')),
    field: 'spec.template.processes[1].volumeMounts[0].mountPath',
    says: /should match/,
  },
  {
    what: 'a mountPath with a .. element',
    manifest: instance((s) => (second(s).volumeMounts[0].mountPath = '/etc/../root')),
    field: 'spec.template.processes[1].volumeMounts[0].mountPath',
    says: /should match/,
  },
  {
    what: 'a mountPath under /proc',
    manifest: instance((s) => (second(s).volumeMounts[0].mountPath = '/proc/sys')),
    field: 'spec.template.processes[1].volumeMounts[0].mountPath',
    says: /must not be \/proc, \/sys or under them/,
  },
  {
    what: 'a mountPath of /sys',
    manifest: instance((s) => (second(s).volumeMounts[0].mountPath = '/sys')),
    field: 'spec.template.processes[1].volumeMounts[0].mountPath',
    says: /must not be \/proc, \/sys/,
  },
  {
    what: 'two mounts at the same path',
    manifest: instance((s) => (second(s).volumeMounts[2].mountPath = '/etc/app')),
    field: 'spec.template.processes[1].volumeMounts[2]',
    says: /Duplicate value/,
  },
  {
    what: 'a subPath',
    manifest: instance((s) => (second(s).volumeMounts[0].subPath = 'a.conf')),
    field: 'spec.template.processes[1].volumeMounts[0].subPath',
    says: /is not supported/,
  },
  {
    what: 'an emptyDir sizeLimit that is no quantity',
    manifest: instance((s) => (vol(s, 2).emptyDir.sizeLimit = 'lots')),
    field: 'spec.template.volumes[2].emptyDir.sizeLimit',
    says: /must be a whole number of bytes/,
  },
  {
    what: 'an emptyDir sizeLimit below a page',
    manifest: instance((s) => (vol(s, 2).emptyDir.sizeLimit = '100')),
    field: 'spec.template.volumes[2].emptyDir.sizeLimit',
    says: /at least 4096/,
  },
  {
    what: 'an unknown emptyDir medium',
    manifest: instance((s) => (vol(s, 2).emptyDir.medium = 'HugePages')),
    field: 'spec.template.volumes[2].emptyDir.medium',
    says: /Unsupported value/,
  },
  {
    what: 'an item path climbing out of the volume',
    manifest: instance((s) => (vol(s, 0).configMap.items[0].path = 'a/../../etc/passwd')),
    field: 'spec.template.volumes[0].configMap.items[0].path',
    says: /should match/,
  },
  {
    what: 'an absolute item path',
    manifest: instance((s) => (vol(s, 0).configMap.items[0].path = '/etc/passwd')),
    field: 'spec.template.volumes[0].configMap.items[0].path',
    says: /should match/,
  },
  {
    what: 'a file mode over 0777',
    manifest: instance((s) => (vol(s, 1).secret.defaultMode = 0o1777)),
    field: 'spec.template.volumes[1].secret.defaultMode',
    says: /less than or equal to 511/,
  },
  {
    what: 'a secret volume without its secretName',
    manifest: instance((s) => delete vol(s, 1).secret.secretName),
    field: 'spec.template.volumes[1].secret.secretName',
    says: /Required value/,
  },
  {
    what: 'a configMap volume naming an object that is no DNS subdomain',
    manifest: instance((s) => (vol(s, 0).configMap.name = 'Cfg')),
    field: 'spec.template.volumes[0].configMap.name',
    says: /should match/,
  },
  {
    what: 'service without ports',
    manifest: service((s) => (s.ports = [])),
    field: 'spec.ports',
    says: /at least 1 item/,
  },
  {
    what: 'service ejection percent over 100',
    manifest: service((s) => (s.outlierDetection = { maxEjectionPercent: 101 })),
    field: 'spec.outlierDetection.maxEjectionPercent',
    says: /less than or equal to 100/,
  },
  {
    what: 'service with an unknown balancing policy',
    manifest: service((s) => (s.loadBalancer = { policy: 'fastest' })),
    field: 'spec.loadBalancer.policy',
    says: /Unsupported value/,
  },
  {
    what: 'service hashing a header without ring-hash',
    manifest: service((s) => (s.loadBalancer = { policy: 'round-robin', hashOn: { header: 'x-user' } })),
    field: 'spec.loadBalancer.hashOn',
    says: /hashOn is for policy ring-hash/,
  },
  {
    what: 'service hashing a header and a cookie',
    manifest: service(
      (s) => (s.loadBalancer = { policy: 'ring-hash', hashOn: { header: 'x-user', cookie: 'id' } }),
    ),
    field: 'spec.loadBalancer.hashOn',
    says: /at most 1/,
  },
  {
    what: 'service hashing a header name that is not a token',
    manifest: service((s) => (s.loadBalancer = { policy: 'ring-hash', hashOn: { header: 'x user' } })),
    field: 'spec.loadBalancer.hashOn.header',
    says: /must be an HTTP field name/,
  },
  {
    what: 'service hashing a header on a tcp port',
    manifest: service((s) => {
      s.ports = [{ name: 'raw', port: 81, targetPort: 'raw', protocol: 'tcp' }];
      s.loadBalancer = { policy: 'ring-hash', hashOn: { cookie: 'session' } };
    }),
    field: 'spec.loadBalancer.hashOn',
    says: /needs every port to be protocol http/,
  },
];

test(`${invalid.length} invalid manifests are each rejected naming the field, and none is stored`, async (t) => {
  const ns = await freshNamespace(t);
  // The manifests before their one mutation are valid and stored: each rejection below is the
  // mutation's doing, not the base's.
  for (const base of [instance(() => {}), service(() => {})]) {
    const good = { ...base, metadata: { name: 'good' } };
    const applied = kubectl(['apply', '--validate=strict', '-n', ns, '-f', '-'], stringify(good));
    t.is(applied.code, 0, `the valid ${base.kind} is rejected: ${applied.stderr}`);
    const kind = base.kind === 'Service' ? 'osvc' : 'inst';
    t.is(kubectl(['get', '-n', ns, kind, 'good', '-o', 'name']).code, 0, `the valid ${base.kind} is stored`);
  }
  for (const { what, manifest, field, says } of invalid) {
    const result = kubectl(['apply', '--validate=strict', '-n', ns, '-f', '-'], stringify(manifest));
    t.not(result.code, 0, `${what}: accepted`);
    t.true(result.stderr.includes(field), `${what}: message does not name ${field}: ${result.stderr}`);
    if (says) t.regex(result.stderr, says, `${what}: ${result.stderr}`);
    const kind = manifest.kind === 'Service' ? 'osvc' : 'inst';
    t.regex(kubectl(['get', '-n', ns, kind, 'bad']).stderr, /NotFound/, `${what}: an object was stored`);
  }
});

test('a bound Replica cannot be moved to another host', async (t) => {
  const ns = await freshNamespace(t);
  const replica = (host: string) =>
    stringify({
      apiVersion: 'orrery.dev/v1alpha1',
      kind: 'Replica',
      metadata: { name: 'web-0' },
      spec: {
        instance: 'web',
        ordinal: 0,
        host,
        template: { processes: [{ name: 'a', command: ['true'] }] },
      },
    });
  ok(['apply', '-n', ns, '-f', '-'], replica('host-a'));
  const moved = kubectl(['apply', '-n', ns, '-f', '-'], replica('host-b'));
  t.not(moved.code, 0);
  t.regex(moved.stderr, /spec\.host: Invalid value.*immutable once the replica is bound/);
  t.is(ok(['get', '-n', ns, 'rep', 'web-0', '-o', 'jsonpath={.spec.host}']), 'host-a');
});

test('replicas can be listed by host and by phase with a field selector', async (t) => {
  const ns = await freshNamespace(t);
  for (const [name, host] of [
    ['web-0', 'host-a'],
    ['web-1', 'host-b'],
  ] as const) {
    ok(
      ['apply', '-n', ns, '-f', '-'],
      stringify({
        apiVersion: 'orrery.dev/v1alpha1',
        kind: 'Replica',
        metadata: { name },
        spec: {
          instance: 'web',
          ordinal: Number(name.slice(-1)),
          host,
          template: { processes: [{ name: 'a', command: ['true'] }] },
        },
      }),
    );
  }
  t.is(
    ok(['get', '-n', ns, 'rep', '--field-selector', 'spec.host=host-b', '-o', 'name']).trim(),
    'replica.orrery.dev/web-1',
  );
  ok([
    'patch',
    '-n',
    ns,
    'rep',
    'web-0',
    '--subresource',
    'status',
    '--type',
    'merge',
    '-p',
    '{"status":{"phase":"Running"}}',
  ]);
  t.is(
    ok(['get', '-n', ns, 'rep', '--field-selector', 'status.phase=Running', '-o', 'name']).trim(),
    'replica.orrery.dev/web-0',
  );
});
