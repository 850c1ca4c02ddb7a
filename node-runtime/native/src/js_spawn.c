/* See js_spawn.h. */
#include "js_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fd.h"
#include "js_work.h"
#include "pidfd.h"
#include "spawn_request.h"

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
  char *file, *cwd, *hostname, *log_path, *init_path, *v2_dir, *status_file, *root;
  char **argv, **envv, **namespaces, **procs, **join_ns, **mask, **bind_src, **bind_dst, **bind_mode, **bind_root;
  struct orrery_bind *binds;
};

static void free_job(struct spawn_job *job) {
  if (!job) return;
  orrery_close_fd(job->own_join_pidfd);
  free(job->file);
  free(job->cwd);
  free(job->hostname);
  free(job->log_path);
  free(job->init_path);
  free(job->v2_dir);
  free(job->status_file);
  free(job->root);
  js_free_strv(job->argv);
  js_free_strv(job->envv);
  js_free_strv(job->namespaces);
  js_free_strv(job->procs);
  js_free_strv(job->mask);
  js_free_strv(job->join_ns);
  js_free_strv(job->bind_src);
  js_free_strv(job->bind_dst);
  js_free_strv(job->bind_mode);
  js_free_strv(job->bind_root);
  free(job->binds);
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
  int n_ns = 0, n_procs = 0, n_join = 0, n_binds = 0, n_dst = 0, n_modes = 0, n_roots = 0;
  if (js_opt_string_prop(env, obj, "file", &job->file) < 0 || js_opt_string_prop(env, obj, "cwd", &job->cwd) < 0 ||
      js_opt_string_prop(env, obj, "hostname", &job->hostname) < 0 ||
      js_opt_string_prop(env, obj, "logFile", &job->log_path) < 0 ||
      js_opt_string_prop(env, obj, "initPath", &job->init_path) < 0 ||
      js_opt_string_prop(env, obj, "v2Dir", &job->v2_dir) < 0 ||
      js_opt_string_prop(env, obj, "exitStatusFile", &job->status_file) < 0 ||
      js_opt_string_prop(env, obj, "root", &job->root) < 0 ||
      js_string_array_prop(env, obj, "argv", &job->argv, NULL) < 0 ||
      js_string_array_prop(env, obj, "env", &job->envv, NULL) < 0 ||
      js_string_array_prop(env, obj, "namespaces", &job->namespaces, &n_ns) < 0 ||
      js_string_array_prop(env, obj, "procsFiles", &job->procs, &n_procs) < 0 ||
      js_string_array_prop(env, obj, "maskPaths", &job->mask, NULL) < 0 ||
      js_string_array_prop(env, obj, "bindSources", &job->bind_src, &n_binds) < 0 ||
      js_string_array_prop(env, obj, "bindTargets", &job->bind_dst, &n_dst) < 0 ||
      js_string_array_prop(env, obj, "bindModes", &job->bind_mode, &n_modes) < 0 ||
      js_string_array_prop(env, obj, "bindRoots", &job->bind_root, &n_roots) < 0)
    goto fail;
  if (n_binds != n_dst || n_binds != n_modes || n_binds != n_roots) {
    napi_throw_type_error(env, NULL,
                          "bindSources, bindTargets, bindModes and bindRoots must have one entry per volume");
    goto fail;
  }
  if (n_binds > 0) {
    job->binds = calloc((size_t)n_binds, sizeof *job->binds);
    if (!job->binds) {
      napi_throw_error(env, NULL, "out of memory");
      goto fail;
    }
    for (int i = 0; i < n_binds; i++) {
      job->binds[i].source = job->bind_src[i];
      job->binds[i].target = job->bind_dst[i];
      job->binds[i].read_only = strcmp(job->bind_mode[i], "ro") == 0;
      job->binds[i].root = job->bind_root[i][0] ? job->bind_root[i] : NULL;
    }
  }
  req->binds = job->binds;
  req->n_binds = n_binds;
  if (!job->file || !job->log_path) {
    napi_throw_type_error(env, NULL, "file and logFile are required");
    goto fail;
  }
  int has;
  int64_t v;
  if (js_opt_int_prop(env, obj, "init", &has, &v) < 0) goto fail;
  req->init = has && v;
  if (req->init && !job->init_path) {
    napi_throw_type_error(env, NULL, "initPath is required with init");
    goto fail;
  }
  if (js_opt_int_prop(env, obj, "uid", &req->has_uid, &v) < 0) goto fail;
  req->uid = (uid_t)v;
  if (js_opt_int_prop(env, obj, "gid", &req->has_gid, &v) < 0) goto fail;
  req->gid = (gid_t)v;
  if (js_opt_int_prop(env, obj, "userNsHostUid", &req->userns, &v) < 0) goto fail;
  req->host_uid = (uid_t)v;
  if (req->userns) {
    if (js_opt_int_prop(env, obj, "userNsHostGid", &has, &v) < 0) goto fail;
    req->host_gid = (gid_t)v;
    if (js_opt_int_prop(env, obj, "userNsSize", &has, &v) < 0) goto fail;
    req->id_count = (uint32_t)v;
  }
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
  req->mask_paths = job->mask;
  req->root = job->root;
  req->n_procs_files = n_procs;
  req->exit_status_file = job->status_file;
  if (js_opt_int_prop(env, obj, "joinPidfd", &has, &v) < 0) goto fail;
  if (has) {
    req->join_pidfd = (int)v;
    if (js_opt_int_prop(env, obj, "joinPid", &has, &v) < 0) goto fail;
    req->join_pid = (pid_t)v;
    if (js_string_array_prop(env, obj, "joinNamespaces", &job->join_ns, &n_join) < 0 ||
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
    CHECK(napi_set_named_property(env, result, "pid", js_int(env, job->res.pid)));
    CHECK(napi_set_named_property(env, result, "pidfd", js_int(env, job->res.pidfd)));
    napi_value start;
    CHECK(napi_create_bigint_uint64(env, job->res.start_time, &start));
    CHECK(napi_set_named_property(env, result, "startTime", start));
  } else {
    CHECK(js_set_failure(env, result, job->res.err, job->res.step));
    CHECK(napi_set_named_property(env, result, "path", js_string_or_null(env, job->res.path)));
  }
  return result;
fail:
  return NULL;
}

napi_value js_spawn_sync(napi_env env, napi_value request) {
  struct spawn_job *job = parse_job(env, request);
  if (!job) return NULL;
  job->rc = orrery_spawn(&job->req, &job->res);
  napi_value result = job_result(env, job);
  free_job(job);
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
    js_reject(env, job->deferred, "spawnAsync failed");
  }
  napi_delete_async_work(env, job->work);
  free_job(job);
}

napi_value js_spawn_async(napi_env env, napi_value request) {
  struct spawn_job *job = parse_job(env, request);
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
  napi_value promise = js_queue_work(env, "spawnAsync", "orrery:spawn", spawn_execute, spawn_complete, job,
                                     &job->work, &job->deferred);
  if (!promise) free_job(job);
  return promise;
}
