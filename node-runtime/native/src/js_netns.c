/* See js_netns.h. The work runs on a libuv threadpool thread, which hands the namespace work to a
 * thread of its own (netns.c): a connect may wait up to the probe's timeout. */
#include "js_netns.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "fd.h"
#include "js_work.h"
#include "netns.h"

struct netns_work {
  napi_async_work work;
  napi_deferred deferred;
  struct orrery_netns_connect req;
  char *host;
  int fd;
  int err;
  const char *step;
};

static void free_work(struct netns_work *w) {
  orrery_close_fd(w->req.pidfd);
  free(w->host);
  free(w);
}

static void netns_execute(napi_env env, void *data) {
  (void)env;
  struct netns_work *w = data;
  if (w->req.pidfd < 0) return; /* the dup failed: err and step are set */
  w->fd = orrery_netns_connect(&w->req, &w->step, &w->err);
}

static void netns_complete(napi_env env, napi_status status, void *data) {
  struct netns_work *w = data;
  napi_value result = NULL;
  if (status == napi_ok && napi_create_object(env, &result) == napi_ok) {
    if (w->fd >= 0) napi_set_named_property(env, result, "fd", js_int(env, w->fd));
    else js_set_failure(env, result, w->err, w->step);
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    orrery_close_fd(w->fd);
    js_reject(env, w->deferred, "netnsConnect was cancelled");
  }
  napi_delete_async_work(env, w->work);
  free_work(w);
}

napi_value js_netns_connect(napi_env env, int pidfd, pid_t pid, char *host, int port, int timeout_ms) {
  struct netns_work *w = calloc(1, sizeof *w);
  if (!w) {
    free(host);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  w->host = host;
  /* Our own copy of the pidfd for the thread: the caller's may be closed (the exit reported) and
   * its number reused for another replica's pidfd before the thread gets to setns. */
  int own = fcntl(pidfd, F_DUPFD_CLOEXEC, 3);
  if (own < 0) {
    w->err = errno;
    w->step = "setns";
  }
  w->req = (struct orrery_netns_connect){
      .pidfd = own, .pid = pid, .host = w->host, .port = port, .timeout_ms = timeout_ms};
  w->fd = -1;
  napi_value promise = js_queue_work(env, "netnsConnect", "orrery:netnsConnect", netns_execute, netns_complete, w,
                                     &w->work, &w->deferred);
  /* Not queued: a created promise is simply never settled and collected. */
  if (!promise) free_work(w);
  return promise;
}
