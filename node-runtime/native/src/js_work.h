/* Work on a libuv threadpool thread that settles a promise (spawnAsync, netnsConnect). */
#ifndef ORRERY_JS_WORK_H
#define ORRERY_JS_WORK_H

#include "js_values.h"

/* A new promise, with execute(data) queued on the threadpool and complete(data) to run on this
 * thread afterwards (it settles *deferred and deletes *work). `name` is the async resource's. NULL
 * with "<what>: cannot create the work" or "...queue the work" thrown: then nothing runs, the
 * promise is never settled (and collected), and data is still the caller's. */
napi_value js_queue_work(napi_env env, const char *what, const char *name, napi_async_execute_callback execute,
                         napi_async_complete_callback complete, void *data, napi_async_work *work,
                         napi_deferred *deferred);

/* Reject with a plain string (the work was cancelled or its result could not be built). */
void js_reject(napi_env env, napi_deferred deferred, const char *message);

#endif
