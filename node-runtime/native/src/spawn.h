/* One spawn: the plan the parent prepares (every string, array and fd is ready before clone, so
 * the child only runs async-signal-safe syscalls), and the entry points of spawn.c / child.c. */
#ifndef ORRERY_SPAWN_H
#define ORRERY_SPAWN_H

#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

#define ORRERY_MAX_PROCS_FDS 16
/* Volumes one process may mount (the template's volumeMounts maxItems). */
#define ORRERY_MAX_BINDS 32

struct orrery_spawn_plan {
  /* What the child execs: the workload itself, or orrery-init with the workload after "--". */
  const char *exec_path;
  int exec_fd; /* init mode: O_PATH fd of orrery-init, exec'd with execveat (child.c), or -1 */
  char *const *exec_argv;
  char *const *envp;
  const char *cwd;      /* NULL: keep the runtime's cwd */
  const char *hostname; /* NULL: keep */
  int log_fd;        /* opened by the parent: the child may no longer be able to (user namespace) */
  uint64_t ns_flags; /* CLONE_NEW* */
  int mount_proc;    /* mount + pid namespace: fresh /proc for the new pid namespace */
  char *const *mask_paths; /* mount namespace: each covered by an empty read-only tmpfs */
  const char *root;        /* mount namespace: the root to pivot into (NULL: keep the runtime's) */
  /* Volumes: detached mounts made by the parent (open_tree), attached at bind_targets by the child
   * (move_mount), after the root and /proc and before the masks. */
  int bind_fds[ORRERY_MAX_BINDS];
  const char *bind_targets[ORRERY_MAX_BINDS];
  /* A read-only volume whose source is on a read-only mount of the runtime's (volumes/manager.ts
   * keeps a replica's configMap and secret tmpfs so; remountReadOnly): bind_fds[i] is -1 and the child
   * clones bind_sources[i] itself, from its own namespace's copy of that mount, which the kernel
   * locked; the clone keeps the lock (README.md, "Locked volumes"). NULL otherwise. */
  const char *bind_sources[ORRERY_MAX_BINDS];
  /* bind_sources[i] split for the child: the directory above it and the last element. */
  const char *bind_source_dirs[ORRERY_MAX_BINDS];
  const char *bind_source_names[ORRERY_MAX_BINDS];
  int n_binds;
  /* With a user namespace: a helper task attaches the volumes before the child's namespaces are
   * made, so that the kernel locks them (clone.c, "Locked volumes"); the child then leaves them
   * and `--make-rprivate /` (already done) alone. helper_bind_index: which one failed. */
  int lock_binds;
  int helper_bind_index;
  int loopback;      /* net namespace: bring lo up */

  /* cgroup.procs files (v1, and v2 when CLONE_INTO_CGROUP is not used) opened by the parent; the
   * child writes "0" to each, which the kernel reads as "the writing task" (cgroup-v2.rst,
   * cgroup.procs), so it is right even inside a new pid namespace where getpid() is 1. */
  int procs_fds[ORRERY_MAX_PROCS_FDS];
  int n_procs_fds;
  int cgroup_dir_fd;  /* v2 directory (O_PATH|O_DIRECTORY) for CLONE_INTO_CGROUP, or -1 */
  int v2_procs_index; /* index in procs_fds of v2Dir/cgroup.procs once we fall back, or -1 */

  /* Namespaces of another process to join before anything else (an exec probe entering its
   * replica): fds of /proc/<pid>/ns/<name> opened by the parent, with their CLONE_NEW* type. */
  int join_ns_fds[5];
  int join_ns_types[5];
  int n_join_ns;

  int has_uid, has_gid;
  uid_t uid;
  gid_t gid;
  /* With CLONE_NEWUSER: the child waits on userns_sync[0] until the parent has written its
   * uid_map and gid_map (only a process with CAP_SETUID in the parent namespace may map a range,
   * user_namespaces(7)), so the clone is not CLONE_VFORK then. -1 without a user namespace. */
  int userns_sync[2];

  /* The resource limits the child sets: -1, the whole table (child.c); else these n_rlimits,
   * planned by the parent while the child waits for the id maps (orrery_plan_rlimits). */
  int n_rlimits;
  int rlimit_resources[16];
  uint64_t rlimit_values[16][2];

  int err_fd;         /* write end of the exec-error pipe (protocol.h) */
  int keep_fds[2];    /* fds the exec'd program needs (-1 = unused); in init mode: init's only */

  /* Init mode (workload_path set): the child clones the workload (CLONE_VM|CLONE_VFORK on
   * gc_stack_top), and once that has exec'd, execs orrery-init -p <pid> itself (README.md). */
  const char *workload_path;
  char *const *workload_argv;
  void *gc_stack_top;
  char *pid_slot; /* 16 bytes the child fills with the workload's pid for init's argv */
  /* Init mode without uid/gid: the child creates the exit status file itself, after cloning the
   * workload, so the unlink + create (~35 µs on ext4) overlaps the workload's exec instead of
   * preceding the clone; status_fd_slot (16 bytes) gets the fd for init's "-s". NULL when the
   * parent created it (keep_fds[0]) or there is none. */
  const char *status_path;
  char *status_fd_slot;
};

/* child.c: runs in the clone child; never returns. */
int orrery_child_main(void *plan);
/* child.c, parent side: plan->n_rlimits and the limits that differ from ours (user namespace). */
void orrery_plan_rlimits(struct orrery_spawn_plan *plan);

/* clone.c: start the child; on success *pidfd is set and the child pid returned.
 * On failure returns -1 with errno set and *step naming the call that failed.
 * *stack is the child stacks' mapping: the caller releases it with orrery_clone_release_stack
 * only after the exec-error pipe reached EOF or a record (the workload may still run on it). */
pid_t orrery_clone(struct orrery_spawn_plan *plan, int *pidfd, const char **step, void **stack);
void orrery_clone_release_stack(void *stack);

/* Which mechanisms the last orrery_clone used (for kernelFeatures / diagnostics). */
extern int orrery_clone3_unavailable;      /* clone3 returned ENOSYS/EPERM once */
extern int orrery_into_cgroup_unavailable; /* CLONE_INTO_CGROUP rejected once */

/* Tests only: behave as if the kernel refused the faster paths. 0 = none, 1 = no
 * CLONE_INTO_CGROUP, 2 = no clone3 (clone + CLONE_PIDFD), 3 = no CLONE_PIDFD (fork + pidfd_open). */
void orrery_clone_force_fallback(int level);

#endif
