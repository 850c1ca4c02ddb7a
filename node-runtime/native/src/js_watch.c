/* See js_watch.h. */
#include "js_watch.h"

#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "addon.h"
#include "pidfd.h"

/* One uv_poll per pidfd, ref'd: Node stays alive while a watch is active (like a child_process
 * handle). If neither PIDFD_INFO_EXIT nor the zombie's stat line has the status (a race with the
 * reaper), we retry on a timer (1 ms doubling to 50 ms, 30 s in all) instead of spinning on the
 * readable fd, then report the exit with an unknown status. */
struct watch {
  uv_poll_t poll;
  uv_timer_t timer;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int pidfd;
  int id;
  int open_handles;
  unsigned retry_ms;
  unsigned waited_ms;
  struct watch *next;
};

static void on_handle_closed(uv_handle_t *h) {
  struct watch *w = h->data;
  if (--w->open_handles == 0) free(w);
}

/* Stop and unlink; frees after libuv has closed both handles. close_fd only on completion: a
 * cancelled watch leaves the fd to its owner. */
static void finish_watch(struct watch *w, int close_fd) {
  struct addon_state *st = NULL;
  napi_get_instance_data(w->env, (void **)&st);
  for (struct watch **p = st ? &st->watches : NULL; p && *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      break;
    }
  }
  uv_poll_stop(&w->poll);
  uv_timer_stop(&w->timer);
  if (close_fd) close(w->pidfd);
  if (w->callback) napi_delete_reference(w->env, w->callback);
  if (w->async) napi_async_destroy(w->env, w->async);
  uv_close((uv_handle_t *)&w->poll, on_handle_closed);
  uv_close((uv_handle_t *)&w->timer, on_handle_closed);
}

static void deliver(struct watch *w, enum orrery_exit_source src, const struct orrery_exit *ex) {
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[3];
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &recv); /* napi_make_callback wants an object receiver */
  int known = src == EXIT_WAITID || src == EXIT_PIDFD_INFO || src == EXIT_ZOMBIE_STAT;
  if (known && ex->code >= 0) argv[0] = js_int(env, ex->code);
  else napi_get_null(env, &argv[0]);
  if (known && ex->signal > 0) argv[1] = js_int(env, ex->signal);
  else napi_get_null(env, &argv[1]);
  argv[2] = js_string_or_null(env, src == EXIT_WAITID ? "waitid" : src == EXIT_PIDFD_INFO ? "pidfd-info"
                                       : src == EXIT_ZOMBIE_STAT ? "zombie-stat"
                                                                 : "unknown");
  napi_async_context async = w->async;
  w->async = NULL;
  napi_ref ref = w->callback;
  w->callback = NULL;
  /* Tear down before calling out, so a callback that spawns or watches again finds a clean slate. */
  finish_watch(w, 1);
  napi_value ret;
  napi_status s = napi_make_callback(env, async, recv, cb, 3, argv, &ret);
  if (s == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_delete_reference(env, ref);
  napi_async_destroy(env, async);
  napi_close_handle_scope(env, scope);
}

static void check_exit(struct watch *w);

static void on_retry(uv_timer_t *t) { check_exit(t->data); }

static void check_exit(struct watch *w) {
  struct orrery_exit ex = {-1, 0};
  int err = 0;
  enum orrery_exit_source src = orrery_pidfd_exit(w->pidfd, &ex, &err);
  if (src == EXIT_NOT_YET) return;
  if (src == EXIT_PENDING_REAP) {
    uv_poll_stop(&w->poll);
    if (w->waited_ms < 30000) {
      w->retry_ms = w->retry_ms ? w->retry_ms * 2 : 1;
      if (w->retry_ms > 50) w->retry_ms = 50;
      w->waited_ms += w->retry_ms;
      uv_timer_start(&w->timer, on_retry, w->retry_ms, 0);
      return;
    }
    src = EXIT_UNKNOWN;
  }
  deliver(w, src, &ex);
}

static void on_pidfd(uv_poll_t *p, int status, int events) {
  (void)events;
  struct watch *w = p->data;
  if (status < 0) {
    struct orrery_exit ex = {-1, 0};
    deliver(w, EXIT_UNKNOWN, &ex);
    return;
  }
  check_exit(w);
}

napi_value js_watch_start(napi_env env, int pidfd, napi_value on_exit) {
  napi_value result = NULL;
  struct addon_state *st = NULL;
  CHECK(napi_get_instance_data(env, (void **)&st));
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  struct watch *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, "ENOMEM", "watchExit: out of memory");
    return NULL;
  }
  w->env = env;
  w->pidfd = pidfd;
  int rc = uv_poll_init(loop, &w->poll, pidfd);
  if (rc < 0) {
    free(w);
    napi_throw_error(env, uv_err_name(rc), "watchExit: uv_poll_init failed on the pidfd");
    return NULL;
  }
  uv_timer_init(loop, &w->timer);
  w->poll.data = w;
  w->timer.data = w;
  w->open_handles = 2;
  napi_value name;
  napi_create_string_utf8(env, "orrery:watchExit", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, on_exit, 1, &w->callback);
  napi_async_init(env, NULL, name, &w->async);
  w->id = ++st->next_id;
  w->next = st->watches;
  st->watches = w;
  rc = uv_poll_start(&w->poll, UV_READABLE, on_pidfd);
  if (rc < 0) {
    finish_watch(w, 0);
    napi_throw_error(env, uv_err_name(rc), "watchExit: uv_poll_start failed on the pidfd");
    return NULL;
  }
  result = js_int(env, w->id);
fail:
  return result;
}

napi_value js_watch_cancel(napi_env env, int id) {
  struct addon_state *st = NULL;
  CHECK(napi_get_instance_data(env, (void **)&st));
  for (struct watch *w = st->watches; w; w = w->next) {
    if (w->id == id) {
      finish_watch(w, 0);
      break;
    }
  }
fail:
  return NULL;
}
