// `orrery tui` end to end: the real command in a real terminal (tmux) against the real API
// server, with objects this test creates, writes and deletes while it watches the screen.
import test from 'ava';
import { installCrds } from '../../crds/install.ts';
import { INSTANCES, REPLICAS, SERVICES } from '../../crds/resources.ts';
import type { Instance, Replica, Service } from '../../crds/types.ts';
import { type Applied, KubeApi, loadKubeConfig, resourceClient } from '../../kube/index.ts';
import { freshNamespace, privateControlPlane } from '../helpers/cluster.ts';
import { e2e } from '../helpers/e2e.ts';
import { orreryCluster } from '../helpers/orrery.ts';
import { attributesAt, EXITED, orreryInTmux } from '../helpers/tmux.ts';
import { eventually } from '../helpers/wait.ts';

const instance = (name: string, ns: string, replicas: number): Applied<Instance> => ({
  metadata: { name, namespace: ns, labels: { app: name } },
  spec: {
    replicas,
    template: {
      metadata: { labels: { app: name } },
      processes: [{ name: 'server', command: ['sleep', 'infinity'] }],
    },
  },
});

/** A Replica as the operator would make it (no operator runs here: nothing else touches it). */
const replica = (inst: string, ordinal: number, ns: string): Applied<Replica> => ({
  metadata: { name: `${inst}-${ordinal}`, namespace: ns, labels: { 'orrery.dev/instance': inst, app: inst } },
  spec: {
    instance: inst,
    ordinal,
    host: 'tui-test-host',
    template: { processes: [{ name: 'server', command: ['sleep', 'infinity'] }] },
  } as Applied<Replica>['spec'],
});

const has = (text: string) => (screen: string[]) => screen.some((line) => line.includes(text));
const row = (name: string) => (screen: string[]) =>
  screen.some((line) => new RegExp(`^ ${name} `).test(line));

test.serial(
  'orrery tui at 80×24: lists, switches views, filters, drills down, follows changes, resizes, quits',
  async (t) => {
    const { kubeconfig } = await orreryCluster();
    const ns = await freshNamespace(t);
    const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
    t.teardown(() => api.close());
    const instances = resourceClient(api, INSTANCES, 'orrery-test');
    const replicas = resourceClient(api, REPLICAS, 'orrery-test');
    const services = resourceClient(api, SERVICES, 'orrery-test');
    await instances.create(instance('web', ns, 2));
    await instances.create(instance('batch', ns, 1));
    for (const ordinal of [0, 1]) await replicas.create(replica('web', ordinal, ns));
    await replicas.patchStatus('web-1', { phase: 'Running', ready: true, restarts: 4 }, { namespace: ns });
    await replicas.create(replica('batch', 0, ns));
    await services.create({
      metadata: { name: 'front', namespace: ns },
      spec: {
        selector: { app: 'web' },
        ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'tcp' }],
      },
    } as Applied<Service>);

    const term = await orreryInTmux(t, ['tui', '--kubeconfig', kubeconfig, '-n', ns], {
      columns: 80,
      rows: 24,
    });
    let screen = await term.waitFor(
      'the two Instances',
      (s) => has(`Instances(${ns})[2]`)(s) && row('web')(s) && row('batch')(s),
    );
    t.is(screen.length, 24);
    t.regex(
      screen[2] ?? '',
      new RegExp(`^ Instances\\(${ns}\\)\\[2\\] ─+$`),
      'the title on the third row: nothing scrolled off',
    );
    t.is(
      screen[23]?.trim(),
      '',
      'the bottom row stays empty: the frame is one line shorter than the terminal',
    );
    t.true(screen.every((line) => line.length <= 80));

    // One made while it runs appears; its row says what it is.
    await instances.create(instance('api', ns, 3));
    screen = await term.waitFor('the new Instance', row('api'));
    t.regex(screen.find((l) => l.startsWith(' api ')) ?? '', /^ api +0\/3 /);

    await term.type(':svc');
    await term.press('Enter');
    screen = await term.waitFor('the Services view', has(`Services(${ns})[1]`));
    t.true(row('front')(screen));
    t.false(row('web')(screen));

    await term.type(':inst');
    await term.press('Enter');
    await term.waitFor('the Instances again', has(`Instances(${ns})[3]`));
    await term.type('/^b');
    screen = await term.waitFor('the filtered view', has(`Instances(${ns})[1] /^b`));
    t.true(row('batch')(screen));
    t.false(row('web')(screen));
    t.false(row('api')(screen));
    await term.press('Enter');
    await term.type('/!^b');
    await term.press('Enter');
    screen = await term.waitFor('the inverted filter', has(`Instances(${ns})[2] /!^b`));
    t.true(row('web')(screen) && row('api')(screen));
    t.false(row('batch')(screen));

    // enter on web (the rows sort by name: api, web): its Replicas, and no other's.
    await term.press('j', 'Enter');
    screen = await term.waitFor('the Replicas of web', has('Replicas(inst/web)[2]'));
    t.regex(screen.find((l) => l.startsWith(' web-1 ')) ?? '', /^ web-1 +0\/1 +Running +4 +tui-test-host/);
    t.false(row('batch-0')(screen));
    await term.press('Escape');
    await term.waitFor('back to the Instances', has(`Instances(${ns})[2] /!^b`));
    await term.press('Escape');
    await term.waitFor('the filter cleared', has(`Instances(${ns})[3] `));

    // Deleted behind its back: the row goes.
    await instances.delete('batch', { namespace: ns });
    screen = await term.waitFor('batch gone', has(`Instances(${ns})[2] `));
    t.false(row('batch')(screen));

    await term.resize(60, 20);
    // Settled once the resize is: the title back on the third row, nothing scrolled off.
    screen = await term.waitFor(
      'the 60×20 layout',
      (s) => s.length === 20 && /^ Instances\(/.test(s[2] ?? '') && row('web')(s) && row('api')(s),
    );
    t.is(screen[19]?.trim(), '', 'the bottom row stays empty');
    t.true(screen.every((line) => line.length <= 60));

    await term.type('q');
    screen = await term.waitFor('the exit', (s) => s.some((l) => EXITED.test(l)));
    t.is(EXITED.exec(screen.join('\n'))?.[1], '0', 'q exits 0');
    t.false(has('Instances(')(screen), 'the shell screen is back, without the UI on it');
  },
);

test.serial(
  'the API server stopped: a banner over the last rows, dimmed; started again: the view recovers by itself',
  async (t) => {
    const cp = await privateControlPlane(t, 'orrery-tui-restart-');
    const kubeconfig = cp.current.kubeconfig;
    await installCrds(loadKubeConfig({ kubeconfig }));
    const api = await KubeApi.fromKubeConfig(loadKubeConfig({ kubeconfig }));
    t.teardown(() => api.close());
    const instances = resourceClient(api, INSTANCES, 'orrery-test');
    await instances.create(instance('web', 'default', 1));

    const term = await orreryInTmux(t, ['tui', '--kubeconfig', kubeconfig], { columns: 200, rows: 50 });
    let screen = await term.waitFor('the Instance', row('web'));
    t.is(screen.length, 50);
    t.is(screen[49]?.trim(), '', 'the frame is one line shorter than the terminal');

    // Waited for while the control plane stops: the stop holds no timer and the control plane's
    // process is unref'd, so nothing else would keep this worker running. The API server may
    // keep serving established watches through its graceful shutdown (up to the launcher's 20 s
    // before SIGKILL), and the banner comes only once it is gone.
    const stopT0 = performance.now();
    [, screen] = await Promise.all([
      cp.stop(),
      term.waitFor('the banner', has('API server unreachable, reconnecting ('), 60_000),
    ]);
    t.log(
      `control plane stopped, banner shown, ${(performance.now() - stopT0).toFixed(0)} ms after the stop began`,
    );
    t.true(row('web')(screen), 'the last rows seen stay');
    const dim = (styled: string[]) => styled.some((l) => attributesAt(l, ' web ')?.has(2));
    t.true(dim(await term.styledScreen()), 'dimmed');
    await term.waitFor('a second attempt', (s) => /reconnecting \((?:[2-9]|\d{2,})\)/.test(s.join('\n')));

    await cp.start();
    await instances.create(instance('api', 'default', 1));
    screen = await term.waitFor(
      'the recovered view',
      (s) => has('Instances(default)[2]')(s) && row('api')(s),
      30_000,
    );
    t.false(has('unreachable')(screen));
    t.false(dim(await term.styledScreen()), 'no longer dimmed');
    t.false(
      screen.some((l) => EXITED.test(l)),
      'it never exited',
    );
    await term.type('q');
    await term.waitFor('the exit', (s) => s.some((l) => /\[exited with 0\]/.test(l)));
  },
);

test.serial(
  'with a real operator and runtime: an applied Instance shows within 1 s, a killed process its restart, ctrl-d deletes it',
  async (t) => {
    const env = await e2e(t, { hosts: 1 });
    await env.startOperator();
    const term = await orreryInTmux(t, ['tui', '--kubeconfig', env.kubeconfig, '-n', env.ns], {
      columns: 200,
      rows: 50,
    });
    await term.waitFor('the empty view', has(`no instances in namespace ${env.ns}`));

    const applied = performance.now();
    await env.instances.create(instance('loop', env.ns, 1));
    await term.waitFor('the Instance', row('loop'), 5_000);
    const shownMs = performance.now() - applied;
    t.log(`applied → on screen in ${shownMs.toFixed(0)} ms`);
    t.true(shownMs <= 1_000, `applied → shown in ${shownMs.toFixed(0)} ms`);
    await term.waitFor('the Instance ready', (s) => /^ loop +1\/1 /m.test(s.join('\n')), 30_000);

    await term.press('Enter');
    await term.waitFor('its Replica Running', (s) => /^ loop-0 +1\/1 +Running +0 /m.test(s.join('\n')));
    await term.press('Enter');
    let screen = await term.waitFor('its process', (s) =>
      /^ server +Running +true +\d+ +0 /m.test(s.join('\n')),
    );
    const pid = Number(/^ server +Running +true +(\d+) /m.exec(screen.join('\n'))?.[1]);
    t.true(pid > 1);
    process.kill(pid, 'SIGKILL');
    screen = await term.waitFor('the restart', (s) =>
      /^ server +\w+ +\w+ +\d+ +1 +Killed \(SIGKILL\)/m.test(s.join('\n')),
    );
    t.notRegex(screen.join('\n'), new RegExp(`^ server +\\w+ +\\w+ +${pid} `, 'm'), 'a new pid');

    await term.press('Escape');
    await term.waitFor('the Replicas', has('Replicas(inst/loop)[1]'));
    await term.press('Escape');
    await term.waitFor('the Instances', has(`Instances(${env.ns})[1]`));
    await term.press('C-d');
    await term.waitFor('the question', has(`Delete instance ${env.ns}/loop? y deletes`));
    await term.type('y');
    await term.waitFor('the Instance gone', has(`no instances in namespace ${env.ns}`), 30_000);
    await eventually('its Replicas gone', async () => (await env.replicasOf('loop')).length === 0);
    await term.type('q');
    await term.waitFor('the exit', (s) => s.some((l) => /\[exited with 0\]/.test(l)));
    t.pass();
  },
);
