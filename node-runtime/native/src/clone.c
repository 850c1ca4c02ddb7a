/* Starting the child: clone3 (Linux 5.3) with CLONE_PIDFD and CLONE_VM|CLONE_VFORK on a
 * separate stack, the way glibc's posix_spawn does, so the kernel does not copy Node's page
 * tables and the parent thread resumes as soon as the child has called execve (or died).
 * Fallbacks, each remembered so it is tried once per process (crun does the same):
 *   clone3 + CLONE_INTO_CGROUP (5.7) -- E2BIG/EINVAL --> clone3, child writes v2 cgroup.procs
 *   clone3 -- ENOSYS (kernel < 5.3) / EPERM (seccomp, e.g. older Docker profiles) --> clone(2)
 *     with CLONE_PIDFD (5.2) via glibc's clone(), which also supports CLONE_VM on a new stack
 *   clone -- EINVAL/ENOSYS/EPERM --> raw clone without CLONE_VM (fork semantics) + pidfd_open (5.3)
 */
#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "spawn.h"
#include "trace.h"

#include <sys/mount.h>

int orrery_clone3_unavailable = 0;
int orrery_into_cgroup_unavailable = 0;
static int clone_pidfd_unavailable = 0;

void orrery_clone_force_fallback(int level) {
  orrery_into_cgroup_unavailable = level >= 1;
  orrery_clone3_unavailable = level >= 2;
  clone_pidfd_unavailable = level >= 3;
}

#define CHILD_STACK_SIZE (128 * 1024)

/* CLONE_VFORK suspends the parent thread until the exec, but with a user namespace the parent
 * must write the child's uid/gid maps first (spawn.c), so it keeps running; the child still shares
 * our memory and the parent still waits for the exec on the error pipe before anything the child
 * uses goes away. */
static uint64_t vfork_flag(const struct orrery_spawn_plan *plan) {
  return plan->userns_sync[0] >= 0 ? 0 : CLONE_VFORK;
}

/* clone3 has no glibc wrapper (2.36 keeps __clone3 private), and a child on a new stack cannot
 * return through a C frame, so this trampoline mirrors glibc's sysdeps/.../x86_64/clone3.S:
 *   long orrery_clone3_run(struct clone_args *args, size_t size, int (*fn)(void *), void *arg)
 * In the child it calls fn(arg) and exits with its result; in the parent it returns the pid or
 * -errno. r8/r9 survive the syscall instruction (only rcx, r11, rax are clobbered). */
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl orrery_clone3_run\n"
        ".hidden orrery_clone3_run\n"
        ".type orrery_clone3_run,@function\n"
        "orrery_clone3_run:\n"
        "  mov %rcx, %r8\n"
        "  mov %rdx, %r9\n"
        "  mov $435, %eax\n"
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jz 1f\n"
        "  ret\n"
        "1:\n"
        "  xor %ebp, %ebp\n"
        "  and $-16, %rsp\n"
        "  mov %r8, %rdi\n"
        "  call *%r9\n"
        "  mov %eax, %edi\n"
        "  mov $60, %eax\n"
        "  syscall\n"
        "  hlt\n"
        ".size orrery_clone3_run, .-orrery_clone3_run\n");
#define HAVE_CLONE3_TRAMPOLINE 1
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl orrery_clone3_run\n"
        ".hidden orrery_clone3_run\n"
        ".type orrery_clone3_run,%function\n"
        "orrery_clone3_run:\n"
        "  mov x10, x2\n"
        "  mov x11, x3\n"
        "  mov x8, #435\n"
        "  svc #0\n"
        "  cbz x0, 1f\n"
        "  ret\n"
        "1:\n"
        "  mov x29, xzr\n"
        "  mov x0, x11\n"
        "  blr x10\n"
        "  mov x8, #93\n"
        "  svc #0\n"
        ".size orrery_clone3_run, .-orrery_clone3_run\n");
#define HAVE_CLONE3_TRAMPOLINE 1
#endif

#ifdef HAVE_CLONE3_TRAMPOLINE
__attribute__((visibility("hidden"))) long orrery_clone3_run(struct orrery_clone_args *args, size_t size,
                                                             int (*fn)(void *), void *arg);

static pid_t try_clone3(struct orrery_spawn_plan *plan, void *stack, int *pidfd, int into_cgroup) {
  struct orrery_clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = CLONE_VM | vfork_flag(plan) | CLONE_PIDFD | plan->ns_flags;
  args.pidfd = (uint64_t)(uintptr_t)pidfd;
  /* SIGCHLD as exit signal, as for fork: waitid(P_PIDFD) then needs no __WCLONE/__WALL. */
  args.exit_signal = SIGCHLD;
  args.stack = (uint64_t)(uintptr_t)stack;
  args.stack_size = CHILD_STACK_SIZE;
  size_t size = ORRERY_CLONE_ARGS_SIZE_VER0;
  if (into_cgroup) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = (uint64_t)plan->cgroup_dir_fd;
    size = ORRERY_CLONE_ARGS_SIZE_VER2;
  }
  long ret = orrery_clone3_run(&args, size, orrery_child_main, plan);
  if (ret < 0) {
    errno = (int)-ret;
    return -1;
  }
  return (pid_t)ret;
}
#endif

/* The child writes itself into v2Dir/cgroup.procs when CLONE_INTO_CGROUP is not used. */
static int add_v2_procs_fd(struct orrery_spawn_plan *plan) {
  if (plan->cgroup_dir_fd < 0 || plan->v2_procs_index >= 0) return 0;
  if (plan->n_procs_fds >= ORRERY_MAX_PROCS_FDS) {
    errno = E2BIG;
    return -1;
  }
  int fd = openat(plan->cgroup_dir_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  plan->v2_procs_index = plan->n_procs_fds;
  plan->procs_fds[plan->n_procs_fds++] = fd;
  return 0;
}

static pid_t clone_with_stack(struct orrery_spawn_plan *plan, void *stack_base, int *pidfd, const char **step) {
  void *stack_top = (char *)stack_base + CHILD_STACK_SIZE;
#ifdef HAVE_CLONE3_TRAMPOLINE
  if (!orrery_clone3_unavailable) {
    int into = plan->cgroup_dir_fd >= 0 && !orrery_into_cgroup_unavailable;
    if (!into && add_v2_procs_fd(plan) < 0) {
      *step = "cgroup.procs";
      return -1;
    }
    *step = "clone3";
    pid_t pid = try_clone3(plan, stack_base, pidfd, into);
    if (pid >= 0) return pid;
    if (into && (errno == E2BIG || errno == EINVAL)) {
      /* E2BIG: kernel 5.3..5.6 does not know clone_args.cgroup; EINVAL: CLONE_INTO_CGROUP unknown. */
      orrery_into_cgroup_unavailable = 1;
      return clone_with_stack(plan, stack_base, pidfd, step);
    }
    if (errno != ENOSYS && errno != EPERM) return -1;
    orrery_clone3_unavailable = 1;
  }
#endif
  if (add_v2_procs_fd(plan) < 0) {
    *step = "cgroup.procs";
    return -1;
  }
  if (!clone_pidfd_unavailable) {
    *step = "clone";
    pid_t pid = clone(orrery_child_main, stack_top,
                      (int)(CLONE_VM | vfork_flag(plan) | CLONE_PIDFD | plan->ns_flags) | SIGCHLD, plan, pidfd);
    if (pid >= 0) return pid;
    if (errno != EINVAL && errno != ENOSYS && errno != EPERM) return -1;
    clone_pidfd_unavailable = 1;
  }
  /* Last resort: fork semantics (copies the address space; slow for a big Node heap, but safe:
   * the child code is async-signal-safe), then pidfd_open (5.3) on the pid, which stays valid
   * because nobody reaps it before we hold the pidfd. */
  *step = "clone";
  long pid = syscall(SYS_clone, (unsigned long)(plan->ns_flags | SIGCHLD), NULL, NULL, NULL, NULL);
  if (pid < 0) return -1;
  if (pid == 0) orrery_child_main(plan);
  *step = "pidfd_open";
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) {
    int err = errno;
    /* Only this pid, which is ours and not yet known to anyone: never waitpid(-1). */
    kill((pid_t)pid, SIGKILL);
    TEMP_FAILURE_RETRY(waitpid((pid_t)pid, NULL, 0));
    errno = err;
    return -1;
  }
  *pidfd = fd;
  return (pid_t)pid;
}

/* One mapping of child stacks is kept and reused: an mmap + munmap per spawn costs two syscalls,
 * first-touch page faults (zeroed pages) and, for munmap in a multi-threaded process, a TLB
 * shootdown on every CPU running one of Node's threads. Spawns from several threads (workers) at
 * once are fine: whoever finds the cached mapping busy maps a private one. */
static void *cached_stack;
static int cached_stack_busy;

/* Three stacks: the child's, the workload's (init mode) and the mount helper's (lock_binds). */
#define STACKS_SIZE (3 * CHILD_STACK_SIZE)

static void *take_stack(void) {
  if (!__atomic_exchange_n(&cached_stack_busy, 1, __ATOMIC_ACQUIRE)) {
    if (cached_stack) return cached_stack;
    /* MAP_POPULATE: fault the pages in now, once, rather than in the child on every spawn. */
    void *s = mmap(NULL, STACKS_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_POPULATE, -1, 0);
    if (s != MAP_FAILED) return cached_stack = s;
    __atomic_store_n(&cached_stack_busy, 0, __ATOMIC_RELEASE);
  }
  void *s = mmap(NULL, STACKS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  return s == MAP_FAILED ? NULL : s;
}

void orrery_clone_release_stack(void *stack) {
  if (!stack) return;
  if (stack == cached_stack) __atomic_store_n(&cached_stack_busy, 0, __ATOMIC_RELEASE);
  else munmap(stack, STACKS_SIZE);
}

/* Locked volumes (plan->lock_binds: volumes and a user namespace). The kernel locks a mount's
 * flags (MNT_LOCK_READONLY, _NODEV, _NOSUID, _NOEXEC, _ATIME) and the mount itself (MNT_LOCKED:
 * it cannot be unmounted to reveal what is below) only when it copies a mount namespace into one
 * owned by a less privileged user namespace (mount_namespaces(7), "Restrictions on mount
 * namespaces"; fs/namespace.c copy_mnt_ns -> lock_mnt_tree), or propagates a mount into one. A
 * volume attached by the child, in the namespace its clone made, is not locked: root of the
 * replica's user namespace could remount it read-write. So the volumes are attached first, by a
 * helper task that is still host root in the runtime's user namespace, in a mount namespace of its
 * own (unshare(CLONE_NEWNS): owned by the initial user namespace, made private so that nothing
 * propagates back to the host); the helper then clones the child, whose new user and mount
 * namespaces copy that one, locking every volume with the rest.
 *
 * The helper is a thread of ours (CLONE_VM|CLONE_THREAD|CLONE_SIGHAND) with CLONE_FILES (the
 * child's pidfd lands in our table) and CLONE_VFORK (we resume once it has exited), but its own
 * fs_struct, which unshare(CLONE_NEWNS) needs: a thread, so nobody has to reap it; the child,
 * whose parent it is, is reparented to another of our threads when it exits (kernel/exit.c,
 * find_new_reaper), and waitid() in any of our threads sees it. Like the child it shares our
 * memory with the calling thread suspended, so it only makes raw syscalls (no malloc, no locks),
 * and every signal is blocked (orrery_clone). */
struct helper {
  struct orrery_spawn_plan *plan;
  void *stack;
  int *pidfd;
  const char *step;
  pid_t pid;
  int err;
};

static pid_t clone_with_stack(struct orrery_spawn_plan *plan, void *stack_base, int *pidfd, const char **step);

/* Where the target of a volume is: below the workload root as if it were "/" (the child pivots
 * into it later) or, without one, the runtime's path; never through a magic link of /proc. The
 * helper is host root: the target is opened for the mount only (O_PATH), in its private copy. */
static int attach_binds(struct orrery_spawn_plan *plan) {
  int root_fd = AT_FDCWD;
  if (plan->root && (root_fd = open(plan->root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) return -1;
  int rc = 0;
  for (int i = 0; i < plan->n_binds && rc == 0; i++) {
    struct orrery_open_how how = {.flags = O_PATH | O_CLOEXEC,
                                  .resolve = ORRERY_RESOLVE_NO_MAGICLINKS |
                                             (plan->root ? ORRERY_RESOLVE_IN_ROOT : 0)};
    int target = (int)syscall(SYS_openat2, root_fd, plan->bind_targets[i], &how, sizeof how);
    if (target < 0 || syscall(SYS_move_mount, plan->bind_fds[i], "", target, "",
                              MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
      plan->helper_bind_index = i;
      rc = -1;
    }
    if (target >= 0) {
      int err = errno;
      close(target);
      errno = err;
    }
  }
  if (root_fd >= 0) {
    int err = errno;
    close(root_fd);
    errno = err;
  }
  return rc;
}

static int helper_main(void *arg) {
  struct helper *h = arg;
  ORRERY_TRACE(TR_HELPER);
  h->step = "mount-private";
  if (syscall(SYS_unshare, CLONE_NEWNS) < 0 ||
      syscall(SYS_mount, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
    h->err = errno;
    return 0;
  }
  h->step = "volume";
  if (attach_binds(h->plan) < 0) {
    h->err = errno;
    return 0;
  }
  ORRERY_TRACE(TR_HELPER_MOUNTS);
  h->pid = clone_with_stack(h->plan, h->stack, h->pidfd, &h->step);
  h->err = errno;
  return 0; /* the trampoline's exit(2) ends this thread only */
}

#define HELPER_FLAGS (CLONE_VM | CLONE_VFORK | CLONE_THREAD | CLONE_SIGHAND | CLONE_FILES | CLONE_SYSVSEM)

static pid_t clone_via_helper(struct orrery_spawn_plan *plan, void *stack_base, int *pidfd, const char **step) {
  struct helper h = {.plan = plan, .stack = stack_base, .pidfd = pidfd, .step = "clone", .pid = -1, .err = 0};
  void *helper_stack = (char *)stack_base + 2 * CHILD_STACK_SIZE;
  long tid = -1;
#ifdef HAVE_CLONE3_TRAMPOLINE
  if (!orrery_clone3_unavailable) {
    struct orrery_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = HELPER_FLAGS;
    args.stack = (uint64_t)(uintptr_t)helper_stack;
    args.stack_size = CHILD_STACK_SIZE;
    tid = orrery_clone3_run(&args, ORRERY_CLONE_ARGS_SIZE_VER0, helper_main, &h);
    if (tid < 0) {
      errno = (int)-tid;
      if (errno != ENOSYS && errno != EPERM) {
        *step = "clone3";
        return -1;
      }
      orrery_clone3_unavailable = 1;
    }
  }
#endif
  if (tid < 0) {
    tid = clone(helper_main, (char *)helper_stack + CHILD_STACK_SIZE, HELPER_FLAGS, &h);
    if (tid < 0) {
      *step = "clone";
      return -1;
    }
  }
  /* CLONE_VFORK: the helper has exited (or exec'd, which it does not); its results are final. */
  *step = h.step;
  errno = h.err;
  return h.pid;
}

pid_t orrery_clone(struct orrery_spawn_plan *plan, int *pidfd, const char **step, void **stack_out) {
  *stack_out = NULL;
  *step = "mmap";
  /* Two stacks: the child's, and above it the one the child lends the workload in init mode. */
  void *stack = take_stack();
  if (!stack) return -1;

  /* Block every signal while the child shares our memory: a Node/libuv handler running in the
   * child would corrupt the parent's state. The child unblocks after resetting handlers. */
  plan->gc_stack_top = (char *)stack + 2 * CHILD_STACK_SIZE;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  ORRERY_TRACE(TR_CLONE);
  pid_t pid = plan->lock_binds ? clone_via_helper(plan, stack, pidfd, step) : clone_with_stack(plan, stack, pidfd, step);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) orrery_clone_release_stack(stack);
  else *stack_out = stack;
  errno = err;
  return pid;
}
