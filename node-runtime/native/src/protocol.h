/* The exec-error protocol shared by the clone child (child.c), orrery-init (init.c) and the
 * parent (spawn.c): a CLOEXEC pipe whose write end reaches the code that calls execve. If
 * execve succeeds, the kernel closes the write end and the parent reads EOF. If any step fails,
 * the failing process writes one fixed-size record and exits 127; the parent reads it whole
 * (records are far below PIPE_BUF, so the write is atomic). */
#ifndef ORRERY_PROTOCOL_H
#define ORRERY_PROTOCOL_H

#include <stdint.h>

enum orrery_step {
  STEP_NONE = 0,
  STEP_SIGNALS,
  STEP_SETSID,
  STEP_CGROUP_PROCS,
  STEP_SETHOSTNAME,
  STEP_MOUNT_PRIVATE,
  STEP_MOUNT_PROC,
  STEP_LOOPBACK,
  STEP_OPEN_LOG,
  STEP_OPEN_DEVNULL,
  STEP_DUP2,
  STEP_SETGROUPS,
  STEP_SETGID,
  STEP_SETUID,
  STEP_NO_NEW_PRIVS,
  STEP_CHDIR,
  STEP_CLOSE_FDS,
  STEP_EXECVE,      /* the workload's execve (directly, or inside orrery-init) */
  STEP_EXECVE_INIT, /* execve of orrery-init itself */
  STEP_INIT_FORK,   /* orrery-init could not fork the workload */
  STEP_INIT_SETUP,  /* orrery-init could not block signals / become subreaper */
  STEP_EXIT_STATUS_FILE, /* the child could not create the exit status file (init mode) */
  STEP_SETNS,            /* joining another process's namespaces (joinNamespacesOf) */
  STEP_USERNS,           /* waiting for the parent's uid/gid maps, becoming root of the user ns */
  STEP_RLIMIT,           /* setting the replica's resource limits */
  STEP_MASK,             /* covering a path the workload must not see (maskPaths) */
  STEP_ROOT,             /* pivoting into the workload root (root); index says which call */
  STEP_VOLUME,           /* attaching a volume (binds[index]): open_tree/mount_setattr, move_mount */
  STEP__COUNT
};

struct orrery_exec_error {
  int32_t step;  /* enum orrery_step */
  int32_t err;   /* errno */
  int32_t index; /* which cgroup.procs file, for STEP_CGROUP_PROCS; else 0 */
};

#endif
