import test from 'ava';
import { ensureNamespace, type KubeApi, KubeApiError, type RequestOptions } from '../../kube/index.ts';

/** A KubeApi that answers GET and POST with the given status (200/201 when absent) and records the calls. */
function fakeApi(answers: { GET?: number; POST?: number }) {
  const calls: string[] = [];
  const api = {
    async request(opts: RequestOptions) {
      calls.push(`${opts.method} ${opts.path}`);
      const status = answers[opts.method as 'GET' | 'POST'];
      if (status === undefined) return {};
      const reason = { 403: 'Forbidden', 404: 'NotFound', 409: 'AlreadyExists', 500: 'InternalError' }[
        status
      ];
      throw new KubeApiError({ status, method: opts.method, path: opts.path, body: { reason } });
    },
  } as unknown as KubeApi;
  return { api, calls };
}

test('a namespace that exists costs one GET and no write', async (t) => {
  const { api, calls } = fakeApi({});
  await ensureNamespace(api, 'orrery-system', 'test');
  t.deepEqual(calls, ['GET /api/v1/namespaces/orrery-system']);
});

test('a missing namespace is created; AlreadyExists (a race) is success', async (t) => {
  for (const POST of [undefined, 409]) {
    const { api, calls } = fakeApi({ GET: 404, ...(POST ? { POST } : {}) });
    await ensureNamespace(api, 'orrery-system', 'test');
    t.deepEqual(calls, ['GET /api/v1/namespaces/orrery-system', 'POST /api/v1/namespaces']);
  }
});

test('a forbidden GET falls through to the create; other errors are thrown', async (t) => {
  const forbiddenGet = fakeApi({ GET: 403 });
  await ensureNamespace(forbiddenGet.api, 'orrery-system', 'test');
  t.is(forbiddenGet.calls.length, 2);
  await t.throwsAsync(ensureNamespace(fakeApi({ GET: 403, POST: 403 }).api, 'x', 'test'), {
    instanceOf: KubeApiError,
  });
  await t.throwsAsync(ensureNamespace(fakeApi({ GET: 500 }).api, 'x', 'test'), { instanceOf: KubeApiError });
});
