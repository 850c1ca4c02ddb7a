/* Opt-in timing of one spawn, step by step (index.ts setSpawnTrace / lastSpawnTrace, used by
 * `npx tsx bench/spawn.bench.ts --trace`). The clone child shares our memory (CLONE_VM), so it
 * writes its stamps straight into these globals; clock_gettime is async-signal-safe
 * (signal-safety(7)) and served by the vDSO. The CPU comes from the raw getcpu syscall, not glibc's
 * sched_getcpu: that reads the rseq area of the *parent* thread's TLS, which the child shares but
 * the kernel does not update for it (rseq is not inherited under CLONE_VM). Off by default: one
 * predictable branch per step. With the fork fallback the child's stamps land in its own copy and
 * stay 0. */
#ifndef ORRERY_TRACE_H
#define ORRERY_TRACE_H

#include <stdint.h>

enum orrery_trace_point {
  TR_ENTER,          /* parent: orrery_spawn entered */
  TR_STATUS_FILE,    /* exit status file created afresh: by the parent, or (init mode) by the child
                        after the workload clone */
  TR_PREPARED,       /* parent: status file, cgroup fds, pipe open */
  TR_CLONE,          /* parent: about to clone */
  TR_HELPER,         /* lock_binds: the mount helper's first instruction */
  TR_HELPER_MOUNTS,  /* lock_binds: the helper's private mount namespace with the volumes attached */
  TR_CHILD,          /* child: first instruction */
  TR_SIGNALS,        /* child: dispositions reset, mask cleared */
  TR_VOLUME_TREES,   /* child: read-only volumes cloned from locked mounts (bind_sources) */
  TR_USERNS,         /* child: the parent's uid/gid maps seen, root of its user namespace */
  TR_SETSID,
  TR_CGROUPS,        /* child: v1 (and fallback v2) cgroup.procs written */
  TR_HOSTNAME,
  TR_MOUNT_PRIVATE,  /* child: mount --make-rprivate / */
  TR_MOUNT_PROC,     /* child: fresh /proc */
  TR_STDIO,          /* child: /dev/null, log file, dup2 */
  TR_IDENTITY,       /* child: setgroups/setgid/setuid/no_new_privs, chdir */
  TR_CLOSE_FDS,      /* child: close_range */
  TR_WORKLOAD_CLONE, /* init mode: the child's clone of the workload returned */
  TR_EXEC,           /* child: execve called (the workload, or orrery-init in init mode) */
  TR_WORKLOAD_EXEC,  /* init mode: the workload task calls execve */
  TR_CLONE_RETURNED, /* parent: clone returned (vfork: the child has exec'd) */
  TR_EOF,            /* parent: EOF on the exec-error pipe: every exec done */
  TR_DONE,           /* parent: orrery_spawn returns */
  TR__COUNT
};

extern int orrery_trace_on;
extern uint64_t orrery_trace_ns[TR__COUNT];
extern int orrery_trace_cpu[TR__COUNT];

void orrery_trace_stamp(enum orrery_trace_point point);
void orrery_trace_reset(void);
const char *orrery_trace_name(enum orrery_trace_point point);

#define ORRERY_TRACE(point)                              \
  do {                                                   \
    if (__builtin_expect(orrery_trace_on, 0)) orrery_trace_stamp(point); \
  } while (0)

#endif
