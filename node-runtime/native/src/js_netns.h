/* netnsConnect: a TCP connect inside the network namespace of the process behind a pidfd
 * (netns.c), off the event loop, as a promise of {fd} or {errno, step}. */
#ifndef ORRERY_JS_NETNS_H
#define ORRERY_JS_NETNS_H

#include <sys/types.h>

#include "js_values.h"

/* Takes host (malloc'd). The promise, or NULL with a pending exception. */
napi_value js_netns_connect(napi_env env, int pidfd, pid_t pid, char *host, int port, int timeout_ms);

#endif
