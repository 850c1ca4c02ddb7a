/* The module: the exported functions and the unpacking of their arguments, each handing over to
 * the file of its concern (js_spawn.c, js_watch.c, js_netns.c) or making one small call itself.
 * Errors from the kernel are returned as {errno, step, path} objects or -errno; index.ts turns
 * them into SpawnError. Programming errors (wrong argument types) throw here. */
#include "syscalls.h"
#include "js_values.h"

#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <unistd.h>

#include "addon.h"
#include "js_bpf.h"
#include "js_netns.h"
#include "js_spawn.h"
#include "js_watch.h"
#include "kernel_features.h"
#include "pidfd.h"
#include "spawn.h"
#include "trace.h"

/* ---------- spawn: the request object is js_spawn.c's to read ---------- */

static napi_value api_spawn(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value obj;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &obj, NULL, NULL));
  return js_spawn_sync(env, obj);
fail:
  return NULL;
}

static napi_value api_spawn_async(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value obj;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &obj, NULL, NULL));
  return js_spawn_async(env, obj);
fail:
  return NULL;
}

/* ---------- exit watches (js_watch.c) ---------- */

static napi_value api_watch_exit(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value args[2];
  int32_t fd;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  CHECK(napi_get_value_int32(env, args[0], &fd));
  return js_watch_start(env, fd, args[1]);
fail:
  return NULL;
}

static napi_value api_cancel_watch(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t id;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &id));
  return js_watch_cancel(env, id);
fail:
  return NULL;
}

/* ---------- small pidfd calls: return 0 / fd, or -errno ---------- */

static napi_value api_send_signal(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value args[2];
  int32_t fd, sig;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  CHECK(napi_get_value_int32(env, args[0], &fd));
  CHECK(napi_get_value_int32(env, args[1], &sig));
  return js_rc(env, orrery_pidfd_send_signal(fd, sig));
fail:
  return NULL;
}

static napi_value api_pidfd_open(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t pid;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &pid));
  return js_rc(env, orrery_pidfd_open(pid));
fail:
  return NULL;
}

static napi_value api_close_fd(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t fd;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &fd));
  /* close(2): on Linux the fd is released even on EINTR, so no retry. */
  return js_rc(env, close(fd));
fail:
  return NULL;
}

/* ---------- mountTmpfs(target, options) / unmount(target): volumes ---------- */

/* A tmpfs for a replica's volumes, nosuid and nodev, in the runtime's mount namespace; options is
 * tmpfs's data string (size=,mode=,uid=,gid=). Returns 0 or -errno. */
static napi_value api_mount_tmpfs(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value args[2];
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  char *target = js_string(env, args[0]);
  char *options = target ? js_string(env, args[1]) : NULL;
  int rc = -1;
  if (target && options) rc = mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options);
  int err = errno;
  free(target);
  free(options);
  errno = err;
  return js_rc(env, rc);
fail:
  return NULL;
}

/* The calls below take one path: `op` gives a result (0, an fd) or -1 with errno. The result
 * or -errno. */
static napi_value path_call(napi_env env, napi_callback_info cbinfo, int (*op)(const char *path)) {
  size_t argc = 1;
  napi_value arg;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  char *path = js_string(env, arg);
  int rc = path ? op(path) : -1;
  int err = errno;
  free(path);
  errno = err;
  return js_rc(env, rc);
fail:
  return NULL;
}

/* remountReadOnly(target): the mount at target (a volume's tmpfs, in the runtime's namespace)
 * made read-only, nosuid and nodev; the mount only (AT_EMPTY_PATH-free: the path's mount), not
 * the superblock. A replica's mount namespace copies it locked (README.md, "Locked volumes").
 * 0 or -errno. */
static int remount_read_only(const char *target) {
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
  return (int)syscall(SYS_mount_setattr, AT_FDCWD, target, 0, &attr, sizeof attr);
}

static napi_value api_remount_read_only(napi_env env, napi_callback_info cbinfo) {
  return path_call(env, cbinfo, remount_read_only);
}

/* writableClone(path): a writable detached clone of the mount at path (open_tree OPEN_TREE_CLONE,
 * read-only cleared), attached nowhere: the runtime writes a read-only volume's files through
 * /proc/self/fd/<fd>, and closing the fd unmounts the clone. The fd or -errno. */
static int writable_clone(const char *source) {
  int fd = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  struct mount_attr attr = {.attr_clr = MOUNT_ATTR_RDONLY};
  if (fd >= 0 && syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    fd = -1;
  }
  return fd;
}

static napi_value api_writable_clone(napi_env env, napi_callback_info cbinfo) {
  return path_call(env, cbinfo, writable_clone);
}

/* umount2(target, MNT_DETACH): 0 or -errno. */
static int unmount_detached(const char *target) {
  return umount2(target, MNT_DETACH);
}

static napi_value api_unmount(napi_env env, napi_callback_info cbinfo) {
  return path_call(env, cbinfo, unmount_detached);
}

/* ---------- netnsConnect(pidfd, pid, host, port, timeoutMs): Promise<{fd} | {errno, step}> ---------- */

static napi_value api_netns_connect(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 5;
  napi_value args[5];
  int32_t pidfd, pid, port, timeout_ms;
  char *host = NULL;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL));
  CHECK(napi_get_value_int32(env, args[0], &pidfd));
  CHECK(napi_get_value_int32(env, args[1], &pid));
  if (!(host = js_string(env, args[2]))) {
    napi_throw_type_error(env, NULL, "host");
    goto fail;
  }
  CHECK(napi_get_value_int32(env, args[3], &port));
  CHECK(napi_get_value_int32(env, args[4], &timeout_ms));
  return js_netns_connect(env, pidfd, pid, host, port, timeout_ms);
fail:
  free(host);
  return NULL;
}

/* ---------- kernel features and diagnostics ---------- */

static napi_value api_kernel_features(napi_env env, napi_callback_info cbinfo) {
  (void)cbinfo;
  struct orrery_features f;
  orrery_kernel_features(&f);
  napi_value o = NULL;
  CHECK(napi_create_object(env, &o));
  CHECK(napi_set_named_property(env, o, "clone3", js_bool(env, f.clone3)));
  CHECK(napi_set_named_property(env, o, "cloneIntoCgroup", js_bool(env, f.clone_into_cgroup)));
  CHECK(napi_set_named_property(env, o, "pidfdInfoExit", js_bool(env, f.pidfd_info_exit)));
  CHECK(napi_set_named_property(env, o, "cgroupKill", js_bool(env, f.cgroup_kill)));
fail:
  return o;
}

static napi_value api_force_fallback(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value arg;
  int32_t level;
  CHECK(napi_get_cb_info(env, cbinfo, &argc, &arg, NULL, NULL));
  CHECK(napi_get_value_int32(env, arg, &level));
  orrery_clone_force_fallback(level);
fail:
  return NULL;
}

/* mallocTrim(): glibc's malloc_trim(0), which gives back to the kernel the free pages inside the
 * malloc arenas (not only at their top), and true when it released any. A long-running Node.js
 * process keeps several MiB of them resident after its start (V8's compiler zones, module
 * loading); platform/memory.ts calls this now and then. False where the C library has none. */
static napi_value api_malloc_trim(napi_env env, napi_callback_info cbinfo) {
  (void)cbinfo;
#ifdef __GLIBC__
  return js_bool(env, malloc_trim(0));
#else
  return js_bool(env, 0);
#endif
}

/* spawnTrace(on): enable/disable tracing; returns the last spawn's stamps as
 * [[name, ns, cpu], ...] (points that were not reached are left out), ns on CLOCK_MONOTONIC (the
 * clock of process.hrtime) as a double: exact below 2^53 ns, about 104 days of uptime. */
static napi_value api_spawn_trace(napi_env env, napi_callback_info cbinfo) {
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
    CHECK(napi_set_element(env, row, 0, js_string_or_null(env, orrery_trace_name((enum orrery_trace_point)i))));
    CHECK(napi_create_double(env, (double)orrery_trace_ns[i], &v));
    CHECK(napi_set_element(env, row, 1, v));
    CHECK(napi_set_element(env, row, 2, js_int(env, orrery_trace_cpu[i])));
    CHECK(napi_set_element(env, out, n++, row));
  }
  orrery_trace_on = on;
fail:
  return out;
}

/* ---------- registration ---------- */

static void free_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  struct addon_state *st = calloc(1, sizeof *st);
  if (!st || napi_set_instance_data(env, st, free_state, NULL) != napi_ok) return NULL;
  napi_property_descriptor props[] = {
      {"spawn", NULL, api_spawn, NULL, NULL, NULL, napi_default, NULL},
      {"spawnAsync", NULL, api_spawn_async, NULL, NULL, NULL, napi_default, NULL},
      {"watchExit", NULL, api_watch_exit, NULL, NULL, NULL, napi_default, NULL},
      {"cancelWatch", NULL, api_cancel_watch, NULL, NULL, NULL, napi_default, NULL},
      {"sendSignal", NULL, api_send_signal, NULL, NULL, NULL, napi_default, NULL},
      {"pidfdOpen", NULL, api_pidfd_open, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, api_close_fd, NULL, NULL, NULL, napi_default, NULL},
      {"mountTmpfs", NULL, api_mount_tmpfs, NULL, NULL, NULL, napi_default, NULL},
      {"unmount", NULL, api_unmount, NULL, NULL, NULL, napi_default, NULL},
      {"remountReadOnly", NULL, api_remount_read_only, NULL, NULL, NULL, napi_default, NULL},
      {"writableClone", NULL, api_writable_clone, NULL, NULL, NULL, napi_default, NULL},
      {"forceCloneFallback", NULL, api_force_fallback, NULL, NULL, NULL, napi_default, NULL},
      {"kernelFeatures", NULL, api_kernel_features, NULL, NULL, NULL, napi_default, NULL},
      {"spawnTrace", NULL, api_spawn_trace, NULL, NULL, NULL, napi_default, NULL},
      {"netnsConnect", NULL, api_netns_connect, NULL, NULL, NULL, napi_default, NULL},
      {"mallocTrim", NULL, api_malloc_trim, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof *props, props) != napi_ok) return NULL;
  if (js_bpf_define(env, exports) != napi_ok) return NULL;
  return exports;
}
