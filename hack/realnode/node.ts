// A real Kubernetes node on this machine, joined to a local control plane, as kind makes one in
// a container: kubelet, kube-proxy, kube-scheduler and kube-controller-manager of the control
// plane's release (hack/realnode/main.go), containerd, runc and the CNI plugins from Debian's
// packages, and images built here (images.ts). The test (test/e2e/realnode.test.ts) applies
// deploy/ to it and runs hack/e2e-checks.sh, the checks the kind test runs.
//
// Network: everything (control plane, containerd, kubelet, the pods) runs in a network namespace
// made for the run, whose one non-loopback interface is one end of a veth pair whose other end
// is also inside it; its default route leads there, so no packet leaves the namespace. The node's
// address (10.200.0.2) is on that interface: the apiserver advertises it as the `kubernetes`
// Service's endpoint, which pods reach through kube-proxy's rules, as on any cluster.
// Filesystem, processes and cgroups are the machine's own: a hostPath is a path of this machine,
// and the runtime's workloads are this machine's processes. What the node adds is kept under its
// work dir and a cgroup root of its own, and removed by stop().
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readdir, readFile, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ensureGoBinary, versionLdflags } from '../../controlplane/binary.ts';
import { type ControlPlane, startControlPlane } from '../../controlplane/controlplane.ts';
import { fastPathUnavailable } from '../../node-runtime/bpf/index.ts';
import { parseMountinfo } from '../../node-runtime/cgroups/detect.ts';
import { detectCgroupLayout } from '../../node-runtime/cgroups/index.ts';
import { packagePath } from '../../platform/package.ts';
import { cgroupMounts, removeCgroup } from '../test-sweep.ts';
import { buildOrreryImage, buildPauseImage, ORRERY_IMAGE, PAUSE_IMAGE } from './images.ts';

const run = promisify(execFile);

export const NODE_IP = '10.200.0.2';
const POD_SUBNET = '10.244.0.0/24';
const APISERVER_PORT = 6443;
const CNI_BIN = '/usr/lib/cni';
const CONTAINER_LOG_LINKS = '/var/log/containers';
/**
 * Fixed paths of this machine that the node writes below: deploy/runtime.yaml's hostPath volumes
 * (state, run and log dirs), kubelet's container log links, libcni's cache. What appears in them
 * is removed by stop() (in /run/orrery only what a runtime's run dir holds: other runtimes on this
 * machine keep their claims and `orrery up`'s run dirs there), and each is removed itself when the
 * node made it.
 */
/** deploy/runtime.yaml's run and state dirs: what its runtime's claims name as their owner. */
const DEPLOY_RUNTIME_DIRS = new Set(['/run/orrery', '/var/lib/orrery/state']);
const RUNTIME_HOST_PATHS: ReadonlyMap<string, ReadonlySet<string> | undefined> = new Map([
  ['/var/lib/orrery', undefined],
  ['/run/orrery', new Set(['exit', 'replicas'])],
  ['/var/log/orrery', undefined],
  [CONTAINER_LOG_LINKS, undefined],
  ['/var/lib/cni', undefined],
]);

/** Builds (or finds in the cache) orrery-node, the node components' binary (hack/realnode/main.go). */
export const nodeComponents = (log?: (msg: string) => void) => {
  const sourceDir = packagePath('hack/realnode');
  return ensureGoBinary(
    {
      sourceDir,
      binaryName: 'orrery-node',
      cacheName: 'realnode',
      what: 'kubelet, kube-proxy, kube-scheduler, kube-controller-manager',
      ldflags: () => versionLdflags(sourceDir),
    },
    log ? { log } : {},
  );
};

/** Why a real node cannot run here, or undefined when it can. */
export async function unavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, cgroups, containerd)';
  const missing: string[] = [];
  for (const tool of [
    'containerd',
    'containerd-shim-runc-v2',
    'runc',
    'ctr',
    'nsenter',
    'ip',
    'iptables',
    'cc',
  ]) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      missing.push(tool);
    }
  }
  for (const plugin of ['bridge', 'host-local', 'loopback']) {
    if (!existsSync(join(CNI_BIN, plugin))) missing.push(`${CNI_BIN}/${plugin}`);
  }
  if (missing.length > 0) {
    return `missing ${missing.join(', ')} (Debian: apt-get install containerd runc containernetworking-plugins iptables iproute2 util-linux build-essential openssl curl)`;
  }
  if (!existsSync('/sys/fs/cgroup/memory') && !existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    return 'no cgroup hierarchy with the memory controller at /sys/fs/cgroup';
  }
  return undefined;
}

export interface RealNode {
  name: string;
  /** Admin kubeconfig; its server is reachable only inside `netns`. */
  kubeconfig: string;
  /**
   * nsenter(1) options that enter the node (its network and mount namespaces), as `docker exec`
   * enters a kind node: the apiserver's address is reachable only there.
   */
  nsenter: string[];
  /** The environment for hack/e2e-checks.sh (KUBECONFIG, CONTAINERD_ADDRESS, NODE_NAME, ...). */
  env: NodeJS.ProcessEnv;
  workDir: string;
  stop(): Promise<void>;
}

interface Options {
  workDir: string;
  name?: string;
  log?: (msg: string) => void;
}

/** Sysctls kubelet sets on a node (pkg/kubelet/cm setupNode); put back by stop(). */
const KUBELET_SYSCTLS = [
  'vm/overcommit_memory',
  'vm/panic_on_oom',
  'kernel/panic',
  'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys',
  'kernel/keys/root_maxbytes',
];

/** Mounts at or below `dir`, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'))
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function yaml(value: unknown): string {
  // JSON is YAML: the components read either.
  return `${JSON.stringify(value, null, 2)}\n`;
}

export async function startRealNode(opts: Options): Promise<RealNode> {
  const log = opts.log ?? (() => {});
  const name = opts.name ?? 'realnode-0';
  const workDir = opts.workDir;
  const id = `orrery-rn-${process.pid}`;
  const netnsName = id;
  const netns = `/run/netns/${netnsName}`;
  const cgroupRoot = `/${id}`;
  const sock = join(workDir, 'containerd.sock');
  const children: { name: string; child: ChildProcess }[] = [];
  const savedSysctls = new Map<string, string>();
  let controlPlane: ControlPlane | undefined;
  let nodeNamespaces: string[] = [];
  const hierarchies = cgroupMounts();
  const { v2Root } = detectCgroupLayout();
  const runtimeDirs = new Map<string, Set<string>>();
  const existedBefore = new Set<string>();
  for (const dir of RUNTIME_HOST_PATHS.keys()) {
    const entries = await readdir(dir).catch(() => undefined);
    if (entries) existedBefore.add(dir);
    runtimeDirs.set(dir, new Set(entries ?? []));
  }

  const stop = async () => {
    log('stopping the node');
    for (const { child } of children.slice().reverse()) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    }
    await sleep(1000);
    for (const { child } of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    // Containers and their shims: every process of the node's cgroups, and the shims, which
    // name this containerd's socket on their command line.
    await removeCgroup(hierarchies.map((h) => join(h, cgroupRoot)));
    // What deploy/'s runtime left when the test ended early: its replicas (cgroups orrery/<node>,
    // outside kubelet's) and BPF pins; and what the node added to this machine's fixed paths.
    await removeCgroup(hierarchies.map((h) => join(h, 'orrery', name)));
    await rm(join('/sys/fs/bpf/orrery', name), { recursive: true, force: true }).catch(() => {});
    for (const [dir, before] of runtimeDirs) {
      for (const entry of await readdir(dir).catch(() => [])) {
        const only = RUNTIME_HOST_PATHS.get(dir);
        if (!before.has(entry) && (only === undefined || only.has(entry))) {
          await rm(join(dir, entry), { recursive: true, force: true });
        }
      }
      if (!existedBefore.has(dir)) await rmdir(dir).catch(() => {});
    }
    // The machine-wide claims (ports, user-namespace slots) of deploy/'s runtime name its run or
    // state dir, which a node keeps between installs (a runtime back re-adopts with them), so they
    // never look stale here: released with the node.
    for (const claims of ['/run/orrery/ports', '/run/orrery/userns']) {
      for (const entry of await readdir(claims).catch(() => [])) {
        const owner = await readFile(join(claims, entry), 'utf8').then(
          (text) => (JSON.parse(text) as { stateDir?: string }).stateDir,
          () => undefined,
        );
        if (owner !== undefined && DEPLOY_RUNTIME_DIRS.has(owner))
          await rm(join(claims, entry), { force: true });
      }
    }
    for (const pid of await shimPids(sock)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    await controlPlane?.stop();
    for (const mount of await mountsUnder(workDir)) {
      await run('umount', ['-l', mount]).catch(() => {});
    }
    await run('ip', ['netns', 'delete', netnsName]).catch(() => {});
    for (const [key, value] of savedSysctls) {
      await writeFile(`/proc/sys/${key}`, value).catch(() => {});
    }
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
  };

  try {
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    for (const key of KUBELET_SYSCTLS) {
      const value = await readFile(`/proc/sys/${key}`, 'utf8').catch(() => undefined);
      if (value !== undefined) savedSysctls.set(key, value.trim());
    }

    log('building (or finding) the node components and images');
    const { path: components } = await nodeComponents();
    const [pauseImage, orreryImage] = await Promise.all([
      buildPauseImage(workDir),
      buildOrreryImage(workDir, log),
    ]);

    log(`network namespace ${netnsName}: node address ${NODE_IP}`);
    await run('ip', ['netns', 'add', netnsName]);
    const ipn = (...args: string[]) => run('ip', ['-n', netnsName, ...args]);
    await ipn('link', 'set', 'lo', 'up');
    await ipn('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-end');
    await ipn('addr', 'add', `${NODE_IP}/24`, 'dev', 'eth0');
    await ipn('link', 'set', 'eth0', 'up');
    await ipn('link', 'set', 'eth0-end', 'up');
    await ipn('route', 'add', 'default', 'dev', 'eth0');

    // The node's mount namespace: this machine's mounts, with shared propagation, as systemd makes
    // a node's / and kubelet needs for mountPropagation (deploy/runtime.yaml mounts / with
    // HostToContainer); here / is private, and this machine's own mounts stay as they are. What
    // containerd and kubelet mount (container root filesystems, pod volumes) lives and dies with
    // it. Held by a sleep until stop().
    const holder = spawn('unshare', ['--mount', '--propagation', 'shared', '--', 'sleep', 'infinity'], {
      stdio: 'ignore',
      detached: true,
    });
    holder.unref();
    children.push({ name: 'mount-namespace', child: holder });
    const mountns = `/proc/${holder.pid}/ns/mnt`;
    const ownMountns = await readlink('/proc/self/ns/mnt');
    for (let i = 0; (await readlink(mountns).catch(() => ownMountns)) === ownMountns; i++) {
      if (i > 100) throw new Error('unshare --mount did not make a mount namespace');
      await sleep(20);
    }
    nodeNamespaces = [`--net=${netns}`, `--mount=${mountns}`];

    const spawnIn = (component: string, command: string, args: string[]) => {
      const logPath = join(workDir, `${component}.log`);
      const fd = openSync(logPath, 'a', 0o600);
      try {
        const child = spawn('nsenter', [...nodeNamespaces, '--', command, ...args], {
          stdio: ['ignore', fd, fd],
          detached: true,
        });
        child.unref();
        children.push({ name: component, child });
        child.once('exit', (code, signal) => log(`${component} exited (${signal ?? code}); see ${logPath}`));
      } finally {
        closeSync(fd);
      }
    };

    log('control plane (serving nodes)');
    controlPlane = await startControlPlane({
      dataDir: join(workDir, 'controlplane'),
      port: APISERVER_PORT,
      netns,
      advertiseAddress: NODE_IP,
      controllers: false,
      log,
    });
    const pki = join(workDir, 'controlplane', 'pki');
    const server = `https://127.0.0.1:${APISERVER_PORT}`;
    const kubeconfigFor = async (user: string, groups: string[]) => {
      const base = join(workDir, user.replace(/[^a-z0-9-]/gi, '_'));
      await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${base}.key`]);
      const subject = `/CN=${user}${groups.map((g) => `/O=${g}`).join('')}`;
      await run('openssl', ['req', '-new', '-key', `${base}.key`, '-subj', subject, '-out', `${base}.csr`]);
      await run('openssl', [
        ...['x509', '-req', '-in', `${base}.csr`, '-CA', join(pki, 'ca.crt'), '-CAkey', join(pki, 'ca.key')],
        ...['-CAcreateserial', '-days', '2', '-out', `${base}.crt`],
      ]);
      const path = `${base}.kubeconfig`;
      await writeFile(
        path,
        yaml({
          apiVersion: 'v1',
          kind: 'Config',
          clusters: [{ name: 'local', cluster: { server, 'certificate-authority': join(pki, 'ca.crt') } }],
          users: [{ name: user, user: { 'client-certificate': `${base}.crt`, 'client-key': `${base}.key` } }],
          contexts: [{ name: 'local', context: { cluster: 'local', user } }],
          'current-context': 'local',
        }),
        { mode: 0o600 },
      );
      return path;
    };

    log('kube-controller-manager, kube-scheduler');
    spawnIn('kube-controller-manager', components, [
      'kube-controller-manager',
      `--kubeconfig=${await kubeconfigFor('system:kube-controller-manager', [])}`,
      '--leader-elect=false',
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${join(pki, 'sa.key')}`,
      `--root-ca-file=${join(pki, 'ca.crt')}`,
      `--cluster-signing-cert-file=${join(pki, 'ca.crt')}`,
      `--cluster-signing-key-file=${join(pki, 'ca.key')}`,
      '--bind-address=127.0.0.1',
      '--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle-controller',
    ]);
    spawnIn('kube-scheduler', components, [
      'kube-scheduler',
      `--kubeconfig=${await kubeconfigFor('system:kube-scheduler', [])}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
    ]);

    log('containerd');
    const cniDir = join(workDir, 'cni');
    await mkdir(cniDir, { recursive: true });
    await writeFile(
      join(cniDir, '10-orrery.conflist'),
      yaml({
        cniVersion: '0.4.0',
        name: 'orrery-realnode',
        plugins: [
          {
            type: 'bridge',
            bridge: 'cni0',
            isGateway: true,
            ipMasq: false,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet: POD_SUBNET }]],
              routes: [{ dst: '0.0.0.0/0' }],
              // Not /var/lib/cni/networks: the node's leases go with its work dir.
              dataDir: join(workDir, 'cni-ipam'),
            },
          },
          { type: 'loopback' },
        ],
      }),
    );
    await writeFile(
      join(workDir, 'containerd.toml'),
      [
        'version = 2',
        `root = "${join(workDir, 'containerd')}"`,
        `state = "${join(workDir, 'containerd-state')}"`,
        '[grpc]',
        `  address = "${sock}"`,
        '[plugins."io.containerd.grpc.v1.cri"]',
        `  sandbox_image = "${PAUSE_IMAGE}"`,
        '  netns_mounts_under_state_dir = true',
        // Without CAP_SYS_RESOURCE (withheld here) no process may lower its oom_score_adj, and
        // runc fails every pod sandbox (-998) unless containerd holds scores at its own.
        `  restrict_oom_score_adj = ${!(await hasCapability(CAP_SYS_RESOURCE))}`,
        '  [plugins."io.containerd.grpc.v1.cri".cni]',
        `    bin_dir = "${CNI_BIN}"`,
        `    conf_dir = "${cniDir}"`,
        '',
      ].join('\n'),
    );
    spawnIn('containerd', 'containerd', ['--config', join(workDir, 'containerd.toml')]);
    const ctr = (...args: string[]) =>
      run('ctr', ['-a', sock, '-n', 'k8s.io', ...args], { maxBuffer: 16 << 20 });
    for (let i = 0; ; i++) {
      try {
        await ctr('version');
        break;
      } catch (err) {
        if (i > 100) throw new Error(`containerd did not answer on ${sock}`, { cause: err });
        await sleep(100);
      }
    }
    log('importing the images');
    for (const image of [pauseImage, orreryImage]) await ctr('images', 'import', image);

    log('kubelet');
    for (const h of hierarchies) {
      const dir = join(h, cgroupRoot);
      await mkdir(dir, { recursive: true });
      // A v1 cpuset starts empty: no task could join it.
      for (const file of ['cpuset.cpus', 'cpuset.mems']) {
        const parent = await readFile(join(h, file), 'utf8').catch(() => undefined);
        if (parent !== undefined) await writeFile(join(dir, file), parent);
      }
    }
    const kubeletDir = join(workDir, 'kubelet');
    await mkdir(kubeletDir, { recursive: true });
    await writeFile(
      join(workDir, 'kubelet.yaml'),
      yaml({
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        authentication: {
          anonymous: { enabled: false },
          webhook: { enabled: true },
          x509: { clientCAFile: join(pki, 'ca.crt') },
        },
        authorization: { mode: 'Webhook' },
        cgroupDriver: 'cgroupfs',
        cgroupRoot,
        containerRuntimeEndpoint: `unix://${sock}`,
        failSwapOn: false,
        clusterDomain: 'cluster.local',
        readOnlyPort: 0,
        healthzBindAddress: '127.0.0.1',
        podLogsDir: join(workDir, 'pod-logs'),
        // This machine's disk is shared: eviction by disk pressure or image collection would
        // remove the images imported above, which no registry can give back.
        evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        serializeImagePulls: false,
      }),
    );
    spawnIn('kubelet', components, [
      'kubelet',
      `--config=${join(workDir, 'kubelet.yaml')}`,
      `--kubeconfig=${await kubeconfigFor(`system:node:${name}`, ['system:nodes'])}`,
      `--root-dir=${kubeletDir}`,
      `--cert-dir=${join(kubeletDir, 'pki')}`,
      `--hostname-override=${name}`,
      `--node-ip=${NODE_IP}`,
    ]);

    log('kube-proxy');
    spawnIn('kube-proxy', components, [
      'kube-proxy',
      `--kubeconfig=${await kubeconfigFor('system:kube-proxy', [])}`,
      `--hostname-override=${name}`,
      '--proxy-mode=iptables',
      '--cluster-cidr=10.244.0.0/16',
      // conntrack's table size is the machine's, not this namespace's: leave it.
      '--conntrack-max-per-core=0',
      '--metrics-bind-address=127.0.0.1:10249',
      '--healthz-bind-address=127.0.0.1:10256',
    ]);

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      KUBECONFIG: controlPlane.kubeconfig,
      CONTAINERD_ADDRESS: sock,
      CONTAINERD_NAMESPACE: 'k8s.io',
      ORRERY_E2E_NODE: name,
      ORRERY_E2E_IMAGE: ORRERY_IMAGE,
      // This machine has BPF and a cgroup v2 tree: deploy/'s runtime must take the kernel path.
      ...(v2Root !== undefined && fastPathUnavailable(v2Root) === undefined
        ? { EXPECT_KERNEL_FASTPATH: '1' }
        : {}),
    };
    log('waiting for the node to be Ready');
    await run(
      'nsenter',
      [
        ...nodeNamespaces,
        '--',
        'sh',
        '-c',
        `until kubectl get node ${name} >/dev/null 2>&1; do sleep 1; done`,
      ],
      { env, timeout: 120_000 },
    );
    await run(
      'nsenter',
      [...nodeNamespaces, '--', 'kubectl', 'wait', '--for=condition=Ready', `node/${name}`, '--timeout=120s'],
      { env },
    );
    return { name, kubeconfig: controlPlane.kubeconfig, nsenter: nodeNamespaces, env, workDir, stop };
  } catch (err) {
    const logs: string[] = [];
    for (const { name: component } of children) {
      const text = await readFile(join(workDir, `${component}.log`), 'utf8').catch(() => '');
      logs.push(`--- ${component}:\n${text.trimEnd().split('\n').slice(-15).join('\n')}`);
    }
    await stop();
    throw new Error(`the real node did not come up: ${(err as Error).message}\n${logs.join('\n')}`, {
      cause: err,
    });
  }
}

const CAP_SYS_RESOURCE = 24;

async function hasCapability(bit: number): Promise<boolean> {
  const status = await readFile('/proc/self/status', 'utf8');
  const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return eff !== undefined && (BigInt(`0x${eff}`) & (1n << BigInt(bit))) !== 0n;
}

/** containerd-shim-runc-v2 processes started by the containerd at `sock`. */
async function shimPids(sock: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('containerd-shim') || cmdline.includes('/containerd-shim')) {
      if (cmdline.split('\0').includes(sock)) pids.push(Number(entry));
    }
  }
  return pids;
}

// `node hack/realnode/node.ts` builds (or finds) the node components and prints the binary's
// path, e.g. before a single-file `npx ava test/e2e/realnode.test.ts` run.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  nodeComponents((msg) => console.error(msg)).then(
    (result) => console.log(result.path),
    (err: Error) => {
      console.error(err.message);
      process.exitCode = 1;
    },
  );
}
