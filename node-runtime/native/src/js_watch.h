/* watchExit / cancelWatch: a libuv poll on a pidfd that calls back once with the exit status
 * (pidfd.c says how it is found) and closes the pidfd. */
#ifndef ORRERY_JS_WATCH_H
#define ORRERY_JS_WATCH_H

#include "js_values.h"

/* Calls on_exit(code | null, signal | null, source) once the process behind pidfd has exited,
 * then closes pidfd. The watch's id, or NULL with a pending exception. */
napi_value js_watch_start(napi_env env, int pidfd, napi_value on_exit);

/* Stops watch `id` (if it is still active) without calling back; the pidfd stays open. NULL with
 * a pending exception. */
napi_value js_watch_cancel(napi_env env, int id);

#endif
