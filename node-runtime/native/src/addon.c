/* N-API glue: turns the request object that index.ts has already validated and normalized into a
 * struct orrery_spawn_request, and exposes the pidfd operations. Errors from the kernel are
 * returned as {errno, step, path} objects; index.ts turns them into SpawnError. Programming
 * errors (wrong argument types) throw TypeError here. */
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <node_api.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "kernel_features.h"
#include "netns.h"
#include "pidfd.h"
#include "spawn_request.h"
#include "trace.h"

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      const napi_extended_error_info *info_ = NULL;                                                \
      napi_get_last_error_info(env, &info_);                                                       \
      bool pending_ = false;                                                                       \
      napi_is_exception_pending(env, &pending_);                                                   \
      if (!pending_)                                                                               \
        napi_throw_error(env, NULL, info_ && info_->error_message ? info_->error_message : #call); \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

/* ---------- value helpers ---------- */

static char *get_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    return NULL;
  }
  if (strlen(s) != len) { /* an embedded NUL would silently truncate the path or argument */
    free(s);
    return NULL;
  }
  return s;
}

/* Optional string property: *out stays NULL when absent/undefined/null. Returns -1 on bad type. */
static int get_opt_string(napi_env env, napi_value obj, const char *name, char **out) {
  *out = NULL;
  napi_value v;
  napi_valuetype t;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return -1;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_undefined || t == napi_null) return 0;
  if (t != napi_string || !(*out = get_string(env, v))) {
    napi_throw_type_error(env, NULL, name);
    return -1;
  }
  return 0;
}

static void free_strv(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

static int get_string_array(napi_env env, napi_value obj, const char *name, char ***out, int *count) {
  *out = NULL;
  napi_value arr;
  bool is_array = false;
  uint32_t n = 0;
  if (napi_get_named_property(env, obj, name, &arr) != napi_ok) return -1;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array || napi_get_array_length(env, arr, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, name);
    return -1;
  }
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) return -1;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    if (napi_get_element(env, arr, i, &e) != napi_ok || !(v[i] = get_string(env, e))) {
      free_strv(v);
      napi_throw_type_error(env, NULL, name);
      return -1;
    }
  }
  *out = v;
  if (count) *count = (int)n;
  return 0;
}

static int get_opt_int(napi_env env, napi_value obj, const char *name, int *has, int64_t *out) {
  *has = 0;
  napi_value v;
  napi_valuetype t;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_undefined || t == napi_null) return 0;
  if (t != napi_number && t != napi_boolean) {
    napi_throw_type_error(env, NULL, name);
    return -1;
  }
  if (t == napi_boolean) {
    bool b;
    napi_get_value_bool(env, v, &b);
    *out = b;
  } else if (napi_get_value_int64(env, v, out) != napi_ok) {
    return -1;
  }
  *has = 1;
  return 0;
}

static napi_value make_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

static napi_value make_string_or_null(napi_env env, const char *s) {
  napi_value v;
  if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  else napi_get_null(env, &v);
  return v;
}

/* ---------- spawn ---------- */

static uint64_t ns_flag(const char *name) {
  if (!strcmp(name, "pid")) return CLONE_NEWPID;
  if (!strcmp(name, "mount")) return CLONE_NEWNS;
  if (!strcmp(name, "uts")) return CLONE_NEWUTS;
  if (!strcmp(name, "ipc")) return CLONE_NEWIPC;
  if (!strcmp(name, "net")) return CLONE_NEWNET;
  return 0;
}

/* CLONE_NEW* flags of namespace names; a TypeError naming `field` for an unknown one. */
static int ns_flags_of(napi_env env, char **names, int n, const char *field, uint64_t *out) {
  for (int i = 0; i < n; i++) {
    uint64_t f = ns_flag(names[i]);
    if (!f) {
      napi_throw_type_error(env, NULL, field);
      return -1;
    }
    *out |= f;
  }
  return 0;
}

/* One spawn request copied out of V8 (every string owned here), so it can also run off the event
 * loop (spawnAsync); the result is turned into a JS object afterwards. */
struct spawn_job {
  napi_async_work work;
  napi_deferred deferred;
  struct orrery_spawn_request req;
  struct orrery_spawn_result res;
  int rc;
  int own_join_pidfd; /* spawnAsync's dup of req.join_pidfd, or -1 */
  char *file, *cwd, *hostname, *log_path, *init_path, *v2_dir, *status_file;
  char **argv, **envv, **namespaces, **procs, **join_ns;
};

static void free_job(struct spawn_job *job) {
  if (!job) return;
  if (job->own_join_pidfd >= 0) close(job->own_join_pidfd);
  free(job->file);
  free(job->cwd);
  free(job->hostname);
  free(job->log_path);
  free(job->init_path);
  free(job->v2_dir);
  free(job->status_file);
  free_strv(job->argv);
  free_strv(job->envv);
  free_strv(job->namespaces);
  free_strv(job->procs);
  free_strv(job->join_ns);
  free(job);
}

/* NULL with a pending TypeError when the request is malformed. */
static struct spawn_job *parse_job(napi_env env, napi_value obj) {
  struct spawn_job *job = calloc(1, sizeof *job);
  if (!job) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  job->own_join_pidfd = -1;
  struct orrery_spawn_request *req = &job->req;
  int n_ns = 0, n_procs = 0, n_join = 0;
  if (get_opt_string(env, obj, "file", &job->file) < 0 || get_opt_string(env, obj, "cwd", &job->cwd) < 0 ||
      get_opt_string(env, obj, "hostname", &job->hostname) < 0 ||
      get_opt_string(env, obj, "logFile", &job->log_path) < 0 ||
      get_opt_string(env, obj, "initPath", &job->init_path) < 0 ||
      get_opt_string(env, obj, "v2Dir", &job->v2_dir) < 0 ||
      get_opt_string(env, obj, "exitStatusFile", &job->status_file) < 0 ||
      get_string_array(env, obj, "argv", &job->argv, NULL) < 0 ||
      get_string_array(env, obj, "env", &job->envv, NULL) < 0 ||
      get_string_array(env, obj, "namespaces", &job->namespaces, &n_ns) < 0 ||
      get_string_array(env, obj, "procsFiles", &job->procs, &n_procs) < 0)
    goto fail;
  if (!job->file || !job->log_path) {
    napi_throw_type_error(env, NULL, "file and logFile are required");
    goto fail;
  }
  int has;
  int64_t v;
  if (get_opt_int(env, obj, "init", &has, &v) < 0) goto fail;
  req->init = has && v;
  if (req->init && !job->init_path) {
    napi_throw_type_error(env, NULL, "initPath is required with init");
    goto fail;
  }
  if (get_opt_int(env, obj, "uid", &req->has_uid, &v) < 0) goto fail;
  req->uid = (uid_t)v;
  if (get_opt_int(env, obj, "gid", &req->has_gid, &v) < 0) goto fail;
  req->gid = (gid_t)v;
  if (get_opt_int(env, obj, "noNewPrivs", &has, &v) < 0) goto fail;
  req->no_new_privs = has && v;
  if (ns_flags_of(env, job->namespaces, n_ns, "namespaces", &req->ns_flags) < 0) goto fail;
  req->file = job->file;
  req->argv = job->argv;
  req->env = job->envv;
  req->cwd = job->cwd;
  req->hostname = job->hostname;
  req->log_path = job->log_path;
  req->init_path = job->init_path;
  req->v2_dir = job->v2_dir;
  req->procs_files = job->procs;
  req->n_procs_files = n_procs;
  req->exit_status_file = job->status_file;
  if (get_opt_int(env, obj, "joinPidfd", &has, &v) < 0) goto fail;
  if (has) {
    req->join_pidfd = (int)v;
    if (get_opt_int(env, obj, "joinPid", &has, &v) < 0) goto fail;
    req->join_pid = (pid_t)v;
    if (get_string_array(env, obj, "joinNamespaces", &job->join_ns, &n_join) < 0 ||
        ns_flags_of(env, job->join_ns, n_join, "joinNamespaces", &req->join_ns_flags) < 0)
      goto fail;
  }
  return job;
fail:
  free_job(job);
  return NULL;
}

/* {pid, pidfd, startTime} or {errno, step, path}; NULL with a pending exception. */
static napi_value job_result(napi_env env, struct spawn_job *job) {
  napi_value result = NULL;
  CHECK(napi_create_object(env, &result));
  if (job->rc == 0) {
    CHECK(napi_set_named_property(env, result, "pid", make_int(env, job->res.pid)));
    CHECK(napi_set_named_property(env, result, "pidfd", make_int(env, job->res.pidfd)));
    napi_value start;
    CHECK(napi_create_bigint_uint64(env, job->res.start_time, &start));
    CHECK(napi_set_named_property(env, result, "startTime", start));
  } else {
    CHECK(napi_set_named_property(env, result, "errno", make_int(env, job->res.err)));
    CHECK(napi_set_named_property(env, result, "step", make_string_or_null(env, job->res.step)));
    CHECK(napi_set_named_property(env, result, "path", make_string_or_null(env, job->res.path)));
  }
  return result;
fail:
  return NULL;
}

static napi_value js_spawn(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value obj, result = NULL;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &obj, NULL, NULL));
  struct spawn_job *job = parse_job(env, obj);
  if (!job) return NULL;
  job->rc = orrery_spawn(&job->req, &job->res);
  result = job_result(env, job);
  free_job(job);
fail:
  return result;
}

/* spawnAsync: the same spawn on a libuv threadpool thread, so the event loop keeps running while
 * the child sets itself up and execs (the calling thread waits for the exec; CLONE_VFORK
 * suspends only that thread). The child belongs to our thread group, so the main thread's
 * waitid(P_PIDFD) reaps it as usual; nothing in orrery_spawn depends on the calling thread
 * except the signal mask it sets on itself around the clone. */
static void spawn_execute(napi_env env, void *data) {
  (void)env;
  struct spawn_job *job = data;
  job->rc = orrery_spawn(&job->req, &job->res);
}

static void spawn_complete(napi_env env, napi_status status, void *data) {
  struct spawn_job *job = data;
  napi_value result = status == napi_ok ? job_result(env, job) : NULL;
  if (result) {
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    /* Never started (cancelled) or the result could not be built: no process may be left. */
    if (status == napi_ok && job->rc == 0) {
      orrery_pidfd_send_signal(job->res.pidfd, SIGKILL);
      close(job->res.pidfd);
    }
    napi_value err = NULL;
    napi_create_string_utf8(env, "spawnAsync failed", NAPI_AUTO_LENGTH, &err);
    napi_reject_deferred(env, job->deferred, err);
  }
  napi_delete_async_work(env, job->work);
  free_job(job);
}

static napi_value js_spawn_async(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value obj, promise = NULL, name;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &obj, NULL, NULL));
  struct spawn_job *job = parse_job(env, obj);
  if (!job) return NULL;
  if (job->req.join_ns_flags) {
    /* The thread works on its own copy: the caller's pidfd may be closed (that process's exit
     * reported) and its number reused before the thread opens the namespaces. */
    job->own_join_pidfd = fcntl(job->req.join_pidfd, F_DUPFD_CLOEXEC, 3);
    if (job->own_join_pidfd < 0) {
      free_job(job);
      napi_throw_error(env, "EBADF", "spawnAsync: joinNamespacesOf.pidfd is not an open fd");
      return NULL;
    }
    job->req.join_pidfd = job->own_join_pidfd;
  }
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "orrery:spawn", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, spawn_execute, spawn_complete, job, &job->work) != napi_ok) {
    free_job(job);
    napi_throw_error(env, NULL, "spawnAsync: cannot create the work");
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free_job(job);
    napi_throw_error(env, NULL, "spawnAsync: cannot queue the work");
    return NULL;
  }
  return promise;
fail:
  return NULL;
}

/* ---------- exit watches ---------- */

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

struct addon_state {
  struct watch *watches;
  int next_id;
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
  if (known && ex->code >= 0) argv[0] = make_int(env, ex->code);
  else napi_get_null(env, &argv[0]);
  if (known && ex->signal > 0) argv[1] = make_int(env, ex->signal);
  else napi_get_null(env, &argv[1]);
  argv[2] = make_string_or_null(env, src == EXIT_WAITID ? "waitid" : src == EXIT_PIDFD_INFO ? "pidfd-info"
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

static napi_value js_watch_exit(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value args[2], result = NULL;
  int32_t fd;
  struct addon_state *st = NULL;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  CHECK(napi_get_value_int32(env, args[0], &fd));
  CHECK(napi_get_instance_data(env, (void **)&st));
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  struct watch *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, "ENOMEM", "watchExit: out of memory");
    return NULL;
  }
  w->env = env;
  w->pidfd = fd;
  int rc = uv_poll_init(loop, &w->poll, fd);
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
  napi_create_reference(env, args[1], 1, &w->callback);
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
  result = make_int(env, w->id);
fail:
  return result;
}

static napi_value js_cancel_watch(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t id;
  struct addon_state *st = NULL;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &id));
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

/* ---------- small pidfd calls: return 0 / fd, or -errno ---------- */

static napi_value js_send_signal(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value args[2];
  int32_t fd, sig;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  CHECK(napi_get_value_int32(env, args[0], &fd));
  CHECK(napi_get_value_int32(env, args[1], &sig));
  return make_int(env, orrery_pidfd_send_signal(fd, sig) < 0 ? -errno : 0);
fail:
  return NULL;
}

static napi_value js_pidfd_open(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t pid;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &pid));
  int fd = orrery_pidfd_open(pid);
  return make_int(env, fd < 0 ? -errno : fd);
fail:
  return NULL;
}

static napi_value js_close_fd(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t fd;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &fd));
  /* close(2): on Linux the fd is released even on EINTR, so no retry. */
  return make_int(env, close(fd) < 0 ? -errno : 0);
fail:
  return NULL;
}

/* ---------- netnsConnect(pidfd, pid, host, port, timeoutMs): Promise<{fd} | {errno, step}> ----------
 * Off the event loop (a libuv threadpool thread, which hands the namespace work to a thread of its
 * own, netns.c): a connect may wait up to the probe's timeout. */

struct netns_work {
  napi_async_work work;
  napi_deferred deferred;
  struct orrery_netns_connect req;
  char *host;
  int fd;
  int err;
  const char *step;
};

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
    if (w->fd >= 0) {
      napi_set_named_property(env, result, "fd", make_int(env, w->fd));
    } else {
      napi_set_named_property(env, result, "errno", make_int(env, w->err));
      napi_set_named_property(env, result, "step", make_string_or_null(env, w->step));
    }
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    if (w->fd >= 0) close(w->fd);
    napi_value err = NULL;
    napi_create_string_utf8(env, "netnsConnect was cancelled", NAPI_AUTO_LENGTH, &err);
    napi_reject_deferred(env, w->deferred, err);
  }
  napi_delete_async_work(env, w->work);
  if (w->req.pidfd >= 0) close(w->req.pidfd);
  free(w->host);
  free(w);
}

static napi_value js_netns_connect(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 5;
  napi_value args[5], promise = NULL, name;
  int32_t pidfd, pid, port, timeout_ms;
  struct netns_work *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  CHECK(napi_get_value_int32(env, args[0], &pidfd));
  CHECK(napi_get_value_int32(env, args[1], &pid));
  if (!(w->host = get_string(env, args[2]))) {
    napi_throw_type_error(env, NULL, "host");
    goto fail;
  }
  CHECK(napi_get_value_int32(env, args[3], &port));
  CHECK(napi_get_value_int32(env, args[4], &timeout_ms));
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
  CHECK(napi_create_promise(env, &w->deferred, &promise));
  CHECK(napi_create_string_utf8(env, "orrery:netnsConnect", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, netns_execute, netns_complete, w, &w->work));
  if (napi_queue_async_work(env, w->work) != napi_ok) {
    napi_delete_async_work(env, w->work);
    napi_throw_error(env, NULL, "netnsConnect: cannot queue the work");
    goto fail;
  }
  return promise;
fail:
  /* Before queueing only: a created promise is simply never settled and collected. */
  if (w->req.pidfd > 0) close(w->req.pidfd);
  free(w->host);
  free(w);
  return NULL;
}

static napi_value make_bool(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b != 0, &v);
  return v;
}

static napi_value js_kernel_features(napi_env env, napi_callback_info cbinfo) {
  (void)cbinfo;
  struct orrery_features f;
  orrery_kernel_features(&f);
  napi_value o = NULL;
  CHECK(napi_create_object(env, &o));
  CHECK(napi_set_named_property(env, o, "clone3", make_bool(env, f.clone3)));
  CHECK(napi_set_named_property(env, o, "cloneIntoCgroup", make_bool(env, f.clone_into_cgroup)));
  CHECK(napi_set_named_property(env, o, "pidfdInfoExit", make_bool(env, f.pidfd_info_exit)));
  CHECK(napi_set_named_property(env, o, "cgroupKill", make_bool(env, f.cgroup_kill)));
fail:
  return o;
}

static napi_value js_force_fallback(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t level;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &level));
  orrery_clone_force_fallback(level);
fail:
  return NULL;
}

/* spawnTrace(on): enable/disable tracing; returns the last spawn's stamps as
 * [[name, ns, cpu], ...] (points that were not reached are left out), ns on CLOCK_MONOTONIC (the
 * clock of process.hrtime) as a double: exact below 2^53 ns, about 104 days of uptime. */
static napi_value js_spawn_trace(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg, out = NULL;
  bool on = false;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_bool(env, arg, &on));
  CHECK(napi_create_array(env, &out));
  uint32_t n = 0;
  for (int i = 0; i < TR__COUNT; i++) {
    if (!orrery_trace_ns[i]) continue;
    napi_value row, v;
    CHECK(napi_create_array_with_length(env, 3, &row));
    CHECK(napi_set_element(env, row, 0, make_string_or_null(env, orrery_trace_name((enum orrery_trace_point)i))));
    CHECK(napi_create_double(env, (double)orrery_trace_ns[i], &v));
    CHECK(napi_set_element(env, row, 1, v));
    CHECK(napi_set_element(env, row, 2, make_int(env, orrery_trace_cpu[i])));
    CHECK(napi_set_element(env, out, n++, row));
  }
  orrery_trace_on = on;
fail:
  return out;
}

static void free_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  struct addon_state *st = calloc(1, sizeof *st);
  if (!st || napi_set_instance_data(env, st, free_state, NULL) != napi_ok) return NULL;
  napi_property_descriptor props[] = {
      {"spawn", NULL, js_spawn, NULL, NULL, NULL, napi_default, NULL},
      {"spawnAsync", NULL, js_spawn_async, NULL, NULL, NULL, napi_default, NULL},
      {"watchExit", NULL, js_watch_exit, NULL, NULL, NULL, napi_default, NULL},
      {"cancelWatch", NULL, js_cancel_watch, NULL, NULL, NULL, napi_default, NULL},
      {"sendSignal", NULL, js_send_signal, NULL, NULL, NULL, napi_default, NULL},
      {"pidfdOpen", NULL, js_pidfd_open, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_default, NULL},
      {"forceCloneFallback", NULL, js_force_fallback, NULL, NULL, NULL, napi_default, NULL},
      {"kernelFeatures", NULL, js_kernel_features, NULL, NULL, NULL, napi_default, NULL},
      {"spawnTrace", NULL, js_spawn_trace, NULL, NULL, NULL, napi_default, NULL},
      {"netnsConnect", NULL, js_netns_connect, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof *props, props) != napi_ok) return NULL;
  return exports;
}
