/* spawn and spawnAsync: the request object that index.ts has already validated and normalized,
 * copied out of V8 into a struct orrery_spawn_request (spawn.c), and the result back as
 * {pid, pidfd, startTime} or {errno, step, path}. A malformed request throws a TypeError naming
 * the field. */
#ifndef ORRERY_JS_SPAWN_H
#define ORRERY_JS_SPAWN_H

#include "js_values.h"

/* On the calling thread: the result object, or NULL with a pending exception. */
napi_value js_spawn_sync(napi_env env, napi_value request);

/* On a libuv threadpool thread: a promise of the result, or NULL with a pending exception. */
napi_value js_spawn_async(napi_env env, napi_value request);

#endif
