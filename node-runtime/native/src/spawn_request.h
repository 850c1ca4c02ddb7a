/* What js_spawn.c hands to spawn.c: the validated request, strings already copied out of V8. */
#ifndef ORRERY_SPAWN_REQUEST_H
#define ORRERY_SPAWN_REQUEST_H

#include <stdint.h>
#include <sys/types.h>

#include "spawn.h"

struct orrery_bind {
  const char *source;
  const char *target;
  int read_only;
  /* NULL: source is a path of the runtime's. Else source is resolved below this directory
   * (RESOLVE_IN_ROOT) through no symbolic link (RESOLVE_NO_SYMLINKS): a hostPath volume. */
  const char *root;
};

struct orrery_spawn_request {
  const char *file;
  char **argv; /* NULL-terminated */
  char **env;  /* NULL-terminated, passed through untouched */
  const char *cwd;
  const char *hostname;
  const char *log_path;
  uint64_t ns_flags;
  int init;
  const char *init_path;
  const char *v2_dir;
  char **procs_files;
  int n_procs_files;
  char **mask_paths; /* NULL-terminated: hidden under an empty read-only tmpfs (mount namespace only) */
  const char *root;  /* NULL: the runtime's root; else pivot_root into it (mount namespace only) */
  /* Volumes (mount namespace only): each source directory attached at its target (a path inside
   * the root), read-only where asked. */
  struct orrery_bind *binds;
  int n_binds;
  int has_uid, has_gid;
  uid_t uid;
  gid_t gid;
  /* A new user namespace (userns set): ids 0..id_count-1 inside are host_uid.. / host_gid.. */
  int userns;
  uid_t host_uid;
  gid_t host_gid;
  uint32_t id_count;
  const char *exit_status_file;
  /* join_ns_flags (CLONE_NEWIPC|UTS|NET|NS): join these namespaces of the process behind
   * join_pidfd (join_pid is its pid, for /proc/<pid>/ns) instead of creating any. */
  int join_pidfd;
  pid_t join_pid;
  uint64_t join_ns_flags;
};

struct orrery_spawn_result {
  pid_t pid;
  int pidfd;
  uint64_t start_time; /* /proc/<pid>/stat field 22 (clock ticks since boot); 0 if unknown */
  /* on failure */
  const char *step;
  int err;
  const char *path;
};

/* 0 on success (res->pid, res->pidfd set), -1 with res->step/err/path set. */
int orrery_spawn(const struct orrery_spawn_request *req, struct orrery_spawn_result *res);

#endif
