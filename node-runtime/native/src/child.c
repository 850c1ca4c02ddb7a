/* The clone child, from clone to execve. With CLONE_VM|CLONE_VFORK it shares the Node process's
 * memory while the parent thread is suspended, so (as in glibc's posix_spawn) it must not touch
 * malloc, locks or anything that is not async-signal-safe (signal-safety(7)). Identity changes go
 * through raw syscalls: glibc's setuid() would broadcast to the parent's threads (nptl setxid). */
#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "net.h"
#include "spawn.h"
#include "status_file.h"
#include "trace.h"

static void fail(const struct orrery_spawn_plan *plan, int step, int err, int index) {
  struct orrery_exec_error rec = {.step = step, .err = err, .index = index};
  /* A short write cannot be retried meaningfully here; the parent treats a partial record as
   * unknown failure. EINTR cannot happen: every signal is blocked or defaulted by now. */
  (void)!write(plan->err_fd, &rec, sizeof rec);
  _exit(127);
}

/* Reset every disposition to SIG_DFL, then unblock everything: the parent blocked all signals
 * around clone so that no Node handler can run on the shared memory. execve(2) would reset the
 * *caught* ones by itself, but only at the exec, and the mask survives it, so the workload would
 * start with everything blocked; unblocking before the exec needs the handlers gone first, or a
 * signal arriving in between would run Node's handler here. SIG_IGN (Node ignores SIGPIPE and
 * SIGXFSZ) would survive the exec, and the workload must start at the defaults. This is what
 * glibc's posix_spawn does too (sysdeps/unix/sysv/linux/spawni.c); it costs about 62 syscalls,
 * which is why in init mode the workload task does it, in parallel with the child's exec of
 * orrery-init. */
static void reset_signals(const struct orrery_spawn_plan *plan) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < _NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    /* glibc refuses its reserved real-time signals (32, 33) with EINVAL: skipped rather than
     * filtered by errno, because in init mode errno is shared. The workload is cloned with
     * CLONE_VM and no TLS of its own, so init's concurrent unlink of its exit status file can
     * leave ENOENT there between this sigaction's failure and the check. */
    if (sig >= __SIGRTMIN && sig < SIGRTMIN) continue;
    if (sigaction(sig, &dfl, NULL) < 0) fail(plan, STEP_SIGNALS, errno, sig);
  }
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) fail(plan, STEP_SIGNALS, errno, 0);
}

static void join_cgroups(const struct orrery_spawn_plan *plan) {
  for (int i = 0; i < plan->n_procs_fds; i++) {
    if (write(plan->procs_fds[i], "0", 1) != 1) fail(plan, STEP_CGROUP_PROCS, errno, i);
  }
}

/* The workload root (a runtime in a container runs workloads on the node's filesystem, mounted at
 * /host): runc's pivot_root(".", "."), so that the runtime's own root is detached, not just out of
 * sight as after a chroot. The root is bound onto itself first, recursively (its submounts come
 * along): pivot_root(2) wants a mount point. A new /proc goes in before the pivot, while the
 * runtime's /proc is still visible: in a user namespace the kernel mounts proc only where one is
 * fully visible already (proc(5), "mnt_already_visible"). */
static void attach_volumes(const struct orrery_spawn_plan *plan, const int *bind_fds);

static void setup_mounts(const struct orrery_spawn_plan *plan, const int *bind_fds) {
  /* mount --make-rprivate /: the new mount namespace starts with shared propagation on
   * systemd hosts; without this our /proc would propagate back to the host (mount_namespaces(7)).
   * With lock_binds it is a copy of the helper's, which is private already. */
  if (!plan->lock_binds && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    fail(plan, STEP_MOUNT_PRIVATE, errno, 0);
  ORRERY_TRACE(TR_MOUNT_PRIVATE);
  if (plan->root) {
    if (mount(plan->root, plan->root, NULL, MS_BIND | MS_REC, NULL) < 0) fail(plan, STEP_ROOT, errno, 0);
    if (chdir(plan->root) < 0) fail(plan, STEP_ROOT, errno, 1);
  }
  if (plan->mount_proc &&
      mount("proc", plan->root ? "proc" : "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    fail(plan, STEP_MOUNT_PROC, errno, 0);
  ORRERY_TRACE(TR_MOUNT_PROC);
  if (plan->root) {
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail(plan, STEP_ROOT, errno, 2);
    /* The old root is now stacked on the new one at "/": detach it and everything under it. */
    if (umount2(".", MNT_DETACH) < 0) fail(plan, STEP_ROOT, errno, 3);
    if (chdir("/") < 0) fail(plan, STEP_ROOT, errno, 4);
  }
  /* Volumes (attach_volumes) here without a user namespace; with one, after the id maps. */
  if (bind_fds && plan->userns_sync[0] < 0) attach_volumes(plan, bind_fds);
  /* The runtime's own directories (and a pod's service account token) under an empty read-only
   * tmpfs, as runc masks paths: its mode keeps them closed already, this keeps them unseen. A path
   * that does not exist, or that the workload's ids cannot reach (EACCES on a directory above it),
   * has nothing to hide. */
  for (int i = 0; plan->mask_paths && plan->mask_paths[i]; i++) {
    if (mount("tmpfs", plan->mask_paths[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k,nr_inodes=1,mode=000") < 0 &&
        errno != ENOENT && errno != EACCES)
      fail(plan, STEP_MASK, errno, i);
  }
}

/* The volumes' detached mounts: the parent's (plan->bind_fds), and for a read-only volume whose
 * source is a read-only mount of the runtime's (bind_sources), a clone of this namespace's copy of
 * that mount, which the kernel locked when it copied the namespace into our less privileged user
 * namespace; the clone keeps MNT_LOCK_READONLY (README.md, "Locked volumes"). In two steps, fds in
 * our own stack (the plan is the parent's memory, and these fds are only in our table):
 * open_volume_dirs, first, opens the directory above each source (bind_source_dirs) while our ids
 * are still the runtime's, the owner of its 0700 directories, and before a pivot into a workload
 * root hides them; clone_volume_sources, once the id maps are written, clones the source from
 * there: a volume's tmpfs root is 0700 of the replica's own uid, which we may search only with
 * CAP_DAC_READ_SEARCH over a mapped owner. */
static void open_volume_dirs(const struct orrery_spawn_plan *plan, int *fds) {
  for (int i = 0; i < plan->n_binds; i++) {
    fds[i] = plan->bind_fds[i];
    if (!plan->bind_sources[i]) continue;
    fds[i] = open(plan->bind_source_dirs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fds[i] < 0) fail(plan, STEP_VOLUME, errno, i);
  }
}

static void clone_volume_sources(const struct orrery_spawn_plan *plan, int *fds) {
  for (int i = 0; i < plan->n_binds; i++) {
    if (!plan->bind_sources[i]) continue;
    int dir = fds[i];
    fds[i] = (int)syscall(SYS_open_tree, dir, plan->bind_source_names[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
    if (fds[i] < 0 || syscall(SYS_mount_setattr, fds[i], "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
      fail(plan, STEP_VOLUME, errno, i);
    close(dir);
  }
}

/* Volumes: the parent made each a detached mount (open_tree, already read-only where asked, so
 * the child never resolves the runtime's 0700 directories), or the child cloned it from a locked
 * mount (above); attach them at their targets, paths inside the root. With a user namespace and
 * no such clone, the helper attached them already, before this namespace was copied from its
 * own, so they are locked (clone.c, "Locked volumes"). */
static void attach_volumes(const struct orrery_spawn_plan *plan, const int *bind_fds) {
  for (int i = 0; i < plan->n_binds; i++) {
    if (syscall(SYS_move_mount, bind_fds[i], "", AT_FDCWD, plan->bind_targets[i], MOVE_MOUNT_F_EMPTY_PATH) < 0)
      fail(plan, STEP_VOLUME, errno, i);
  }
}

/* dup2(fd, fd) is a no-op that would leave FD_CLOEXEC set (dup2(2)), so clear it by hand then. */
static int move_fd(int from, int to) {
  if (from == to) return fcntl(to, F_SETFD, 0);
  return dup2(from, to);
}

/* The log file was opened by the parent (spawn.c): in a user namespace the child's host uid may
 * not create files in the runtime's log directory, and should not be able to. */
static void setup_stdio(const struct orrery_spawn_plan *plan) {
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) fail(plan, STEP_OPEN_DEVNULL, errno, 0);
  /* dup2 clears FD_CLOEXEC on the target, so 0..2 survive execve and the sources do not. */
  if (move_fd(null_fd, 0) < 0 || move_fd(plan->log_fd, 1) < 0 || move_fd(plan->log_fd, 2) < 0)
    fail(plan, STEP_DUP2, errno, 0);
}

/* Become root of the new user namespace once the parent has mapped it (await_id_maps, then
 * become_root). Until then the child's
 * ids are still the runtime's (host root, unmapped here): setresuid(0) inside moves them to the
 * first id of the replica's host range, keeping the capabilities the namespace gave, which only
 * count inside it (user_namespaces(7), "Capabilities"). The write end is closed first so that a
 * parent that gives up (and closes its own) is seen as EOF. */
static void await_id_maps(const struct orrery_spawn_plan *plan) {
  close(plan->userns_sync[1]);
  char ok = 0;
  ssize_t n = TEMP_FAILURE_RETRY(read(plan->userns_sync[0], &ok, 1));
  if (n != 1) fail(plan, STEP_USERNS, n < 0 ? errno : EPIPE, 0);
  close(plan->userns_sync[0]);
}

static void become_root(const struct orrery_spawn_plan *plan) {
  if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
    fail(plan, STEP_USERNS, errno, 1);
  if (syscall(SYS_setgroups, 0, NULL) < 0) fail(plan, STEP_SETGROUPS, errno, 0);
}

/* Resource limits are set, never inherited from the runtime (whose own limits are its business).
 * RLIM_INFINITY is spelled out; a hard limit above the runtime's own cannot be raised from inside
 * a user namespace (raising needs CAP_SYS_RESOURCE in the initial one) or without that capability,
 * so it is clamped to it then.
 * The table is documented in ../README.md ("Resource limits"). */
#define MIB (1024ull * 1024ull)
static const struct {
  int resource;
  rlim_t soft, hard;
} rlimits[] = {
    {RLIMIT_CORE, 0, RLIM_INFINITY},          {RLIMIT_CPU, RLIM_INFINITY, RLIM_INFINITY},
    {RLIMIT_DATA, RLIM_INFINITY, RLIM_INFINITY}, {RLIMIT_FSIZE, RLIM_INFINITY, RLIM_INFINITY},
    {RLIMIT_LOCKS, RLIM_INFINITY, RLIM_INFINITY}, {RLIMIT_MEMLOCK, 8 * MIB, 8 * MIB},
    {RLIMIT_MSGQUEUE, 819200, 819200},        {RLIMIT_NICE, 0, 0},
    {RLIMIT_NOFILE, 1024, 524288},            {RLIMIT_NPROC, RLIM_INFINITY, RLIM_INFINITY},
    {RLIMIT_RSS, RLIM_INFINITY, RLIM_INFINITY}, {RLIMIT_RTPRIO, 0, 0},
    {RLIMIT_RTTIME, RLIM_INFINITY, RLIM_INFINITY}, {RLIMIT_STACK, 8 * MIB, RLIM_INFINITY},
    {RLIMIT_AS, RLIM_INFINITY, RLIM_INFINITY},
};

/* Parent side, with a user namespace, while the child sets itself up: inside the namespace no
 * hard limit can be raised (that needs CAP_SYS_RESOURCE in the initial one), so each limit the
 * child will end with is the table's clamped to ours, which the child inherited; only those that
 * differ from ours need a call (here usually NOFILE alone, instead of 15 calls and an EPERM
 * retry). Read after the clone: the child's copy is ours as of then. */
void orrery_plan_rlimits(struct orrery_spawn_plan *plan) {
  int n = 0;
  for (size_t i = 0; i < sizeof rlimits / sizeof *rlimits; i++) {
    struct rlimit now;
    if (syscall(SYS_prlimit64, 0, rlimits[i].resource, NULL, &now) < 0) return; /* child: full table */
    struct rlimit want = {.rlim_cur = rlimits[i].soft, .rlim_max = rlimits[i].hard};
    if (want.rlim_max > now.rlim_max) want.rlim_max = now.rlim_max;
    if (want.rlim_cur > want.rlim_max) want.rlim_cur = want.rlim_max;
    if (want.rlim_cur == now.rlim_cur && want.rlim_max == now.rlim_max) continue;
    plan->rlimit_resources[n] = rlimits[i].resource;
    plan->rlimit_values[n][0] = want.rlim_cur;
    plan->rlimit_values[n++][1] = want.rlim_max;
  }
  plan->n_rlimits = n;
}

static void set_rlimits(const struct orrery_spawn_plan *plan) {
  if (plan->n_rlimits >= 0) {
    for (int i = 0; i < plan->n_rlimits; i++) {
      struct rlimit want = {.rlim_cur = plan->rlimit_values[i][0], .rlim_max = plan->rlimit_values[i][1]};
      if (syscall(SYS_prlimit64, 0, plan->rlimit_resources[i], &want, NULL) < 0)
        fail(plan, STEP_RLIMIT, errno, plan->rlimit_resources[i]);
    }
    return;
  }
  for (size_t i = 0; i < sizeof rlimits / sizeof *rlimits; i++) {
    struct rlimit want = {.rlim_cur = rlimits[i].soft, .rlim_max = rlimits[i].hard};
    if (syscall(SYS_prlimit64, 0, rlimits[i].resource, &want, NULL) == 0) continue;
    struct rlimit now;
    if (errno != EPERM || syscall(SYS_prlimit64, 0, rlimits[i].resource, NULL, &now) < 0)
      fail(plan, STEP_RLIMIT, errno, rlimits[i].resource);
    if (want.rlim_max > now.rlim_max) want.rlim_max = now.rlim_max;
    if (want.rlim_cur > want.rlim_max) want.rlim_cur = want.rlim_max;
    if (syscall(SYS_prlimit64, 0, rlimits[i].resource, &want, NULL) < 0)
      fail(plan, STEP_RLIMIT, errno, rlimits[i].resource);
  }
}

/* no_new_privs always (no setuid binary or file capability can raise the workload again). */
static void drop_privileges(const struct orrery_spawn_plan *plan) {
  if ((plan->has_uid || plan->has_gid) && plan->userns_sync[0] < 0) {
    if (syscall(SYS_setgroups, 0, NULL) < 0) fail(plan, STEP_SETGROUPS, errno, 0);
  }
  if (plan->has_gid && syscall(SYS_setgid, plan->gid) < 0) fail(plan, STEP_SETGID, errno, 0);
  if (plan->has_uid && syscall(SYS_setuid, plan->uid) < 0) fail(plan, STEP_SETUID, errno, 0);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(plan, STEP_NO_NEW_PRIVS, errno, 0);
}

/* Fallback for kernels without close_range(CLOSE_RANGE_CLOEXEC) (< 5.11): walk /proc/self/fd
 * with getdents64 into a stack buffer (opendir would malloc). */
static int cloexec_by_proc(void) {
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -1;
  char buf[1024];
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n < 0) return -1;
    if (n == 0) break;
    for (long off = 0; off < n;) {
      struct {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
      } *d = (void *)(buf + off);
      int fd = 0;
      const char *p = d->name;
      if (*p >= '0' && *p <= '9') {
        while (*p >= '0' && *p <= '9') fd = fd * 10 + (*p++ - '0');
        if (fd > 2 && fd != dir && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return -1;
      }
      off += d->reclen;
    }
  }
  return 0;
}

/* Every fd above 2 is marked close-on-exec rather than closed, so the error pipe stays usable if
 * execve fails; the ones orrery-init needs are then made inheritable again. */
static void close_other_fds(const struct orrery_spawn_plan *plan) {
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
    if (errno != ENOSYS && errno != EINVAL) fail(plan, STEP_CLOSE_FDS, errno, 0);
    if (cloexec_by_proc() < 0) fail(plan, STEP_CLOSE_FDS, errno, 0);
  }
  if (plan->workload_path) return; /* init's fds are made inheritable after the workload's exec */
  for (int i = 0; i < 2; i++) {
    if (plan->keep_fds[i] >= 0 && fcntl(plan->keep_fds[i], F_SETFD, 0) < 0) fail(plan, STEP_CLOSE_FDS, errno, 0);
  }
}

/* The workload under init: everything is set up already (same fds, ids, namespaces, signal
 * defaults); only the exec is left. It runs on its own stack in the Node process's memory, like
 * the child, while the Node thread that spawned it stays blocked reading the exec-error pipe, to
 * which this task holds a write end until its execve (so the memory it uses stays valid). */
static int workload_main(void *arg) {
  struct orrery_spawn_plan *plan = arg;
  /* Cloned without CLONE_SIGHAND: our own copy of the child's dispositions (still Node's) and its
   * mask (all blocked), so this is the same reset the child does without init. */
  reset_signals(plan);
  ORRERY_TRACE(TR_WORKLOAD_EXEC);
  execve(plan->workload_path, plan->workload_argv, plan->envp);
  fail(plan, STEP_EXECVE, errno, 0);
  return 127;
}

static void format_pid(char *out, pid_t pid) {
  char tmp[16];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + pid % 10);
    pid /= 10;
  } while (pid > 0 && n < 15);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = 0;
}

/* Init mode: start the workload, then become orrery-init. The workload is cloned with CLONE_VM
 * but without CLONE_VFORK, so its execve and ours run side by side: the spawn costs one exec
 * latency, not two in a row, and no fork of init. If the workload's exec fails it reports through
 * the pipe and exits 127, and init, its parent, reaps it and exits 127 (the runtime reaps init). */
static void exec_workload_then_init(struct orrery_spawn_plan *plan) {
  /* Orphans must come to us even without a pid namespace (prctl(2): PR_SET_CHILD_SUBREAPER,
   * Linux 3.4, preserved across execve). In a pid namespace we are PID 1 and get them anyway. */
  if (!(plan->ns_flags & CLONE_NEWPID) && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
    fail(plan, STEP_INIT_SETUP, errno, 0);
  pid_t pid = clone(workload_main, plan->gc_stack_top, CLONE_VM | SIGCHLD, plan);
  if (pid < 0) fail(plan, STEP_INIT_FORK, errno, 0);
  ORRERY_TRACE(TR_WORKLOAD_CLONE);
  /* Every signal is still blocked here (since the parent's clone) and stays so through the exec:
   * whatever is sent before init's sigwaitinfo loop stays pending (the mask survives execve) and
   * init forwards it, rather than a pid-namespace init dropping it at SIG_DFL. Node's handlers
   * cannot run (blocked) and are gone at the exec; SIG_IGN ones stay, which init does not mind:
   * blocked signals are queued whatever their disposition (kernel/signal.c, sig_ignored). */
  int err = 0, step = STEP_EXECVE_INIT;
  if (plan->status_path) {
    /* The exit status file, empty (status_file.h), for init only: the workload
     * is already cloned, so no O_CLOEXEC is needed, and this overlaps the workload's exec. */
    int fd = -1;
    if ((fd = orrery_fresh_status_file(plan->status_path, 0)) < 0) err = errno;
    if (err) step = STEP_EXIT_STATUS_FILE;
    else format_pid(plan->status_fd_slot, fd);
    ORRERY_TRACE(TR_STATUS_FILE);
  } else if (plan->keep_fds[0] >= 0 && fcntl(plan->keep_fds[0], F_SETFD, 0) < 0) {
    err = errno;
  }
  if (!err) {
    format_pid(plan->pid_slot, pid);
    ORRERY_TRACE(TR_EXEC);
    /* By the parent's O_PATH descriptor (execveat, Linux 3.19): only the file's own exec bit is
     * checked, not the search bits of the directories above it, which the replica's host uid may
     * lack. ENOSYS: by path. */
    syscall(SYS_execveat, plan->exec_fd, "", plan->exec_argv, plan->envp, AT_EMPTY_PATH);
    if (errno == ENOSYS) execve(plan->exec_path, plan->exec_argv, plan->envp);
    err = errno;
  }
  kill(pid, SIGKILL);
  TEMP_FAILURE_RETRY(waitpid(pid, NULL, __WALL));
  fail(plan, step, err, 0);
}

/* setns(2) with the fds the parent opened, in nsenter's order (mount last). */
static void join_namespaces(const struct orrery_spawn_plan *plan) {
  for (int i = 0; i < plan->n_join_ns; i++) {
    if (setns(plan->join_ns_fds[i], plan->join_ns_types[i]) < 0) fail(plan, STEP_SETNS, errno, i);
  }
}

int orrery_child_main(void *arg) {
  struct orrery_spawn_plan *plan = arg;
  ORRERY_TRACE(TR_CHILD);
  /* In init mode the child keeps everything blocked and the workload resets its own copy. */
  if (!plan->workload_path) reset_signals(plan);
  ORRERY_TRACE(TR_SIGNALS);
  int bind_fds[ORRERY_MAX_BINDS];
  int volumes = plan->n_binds > 0 && !plan->lock_binds;
  if (volumes) open_volume_dirs(plan, bind_fds);
  /* With a user namespace, everything up to the resource limits is done before the parent's id
   * maps are awaited (await_id_maps), while it writes them: our capabilities over the new
   * namespaces are whole from the clone on, and our ids are still the runtime's (host root, the
   * owner of its 0700 directories), so none of it needs the maps, and the wait mostly vanishes
   * behind it. Paths are still resolved only in our own mount namespace, where a mount can hide
   * but never reveal what is below it. */
  /* Own session and process group: a stop signal to -pgid reaches the whole replica, and the
   * runtime's terminal (if any) never sends it SIGINT/SIGHUP. */
  if (setsid() < 0) fail(plan, STEP_SETSID, errno, 0);
  ORRERY_TRACE(TR_SETSID);
  join_namespaces(plan);
  join_cgroups(plan);
  ORRERY_TRACE(TR_CGROUPS);
  if (plan->hostname && sethostname(plan->hostname, strlen(plan->hostname)) < 0)
    fail(plan, STEP_SETHOSTNAME, errno, 0);
  ORRERY_TRACE(TR_HOSTNAME);
  /* The volumes' sources are cloned once the maps are written; with a workload root that must be
   * before the pivot, which detaches the runtime's tree the sources are in (a clone from a
   * detached mount is refused, EINVAL): then the wait comes here, before the mounts. */
  int userns = plan->userns_sync[0] >= 0;
  int early_maps = userns && volumes && plan->root;
  if (early_maps) {
    await_id_maps(plan);
    ORRERY_TRACE(TR_USERNS);
    clone_volume_sources(plan, bind_fds);
  }
  if (plan->ns_flags & CLONE_NEWNS) setup_mounts(plan, volumes ? bind_fds : NULL);
  if (plan->loopback) {
    int err = orrery_loopback_up();
    if (err) fail(plan, STEP_LOOPBACK, err, 0);
  }
  setup_stdio(plan);
  ORRERY_TRACE(TR_STDIO);
  /* With a user namespace the limits come after the wait: the parent plans them meanwhile. */
  if (userns) {
    if (!early_maps) {
      await_id_maps(plan);
      ORRERY_TRACE(TR_USERNS);
    }
    if (volumes) {
      if (!early_maps) clone_volume_sources(plan, bind_fds);
      attach_volumes(plan, bind_fds);
      ORRERY_TRACE(TR_VOLUME_TREES);
    }
    become_root(plan);
  }
  set_rlimits(plan);
  drop_privileges(plan);
  if (plan->cwd && chdir(plan->cwd) < 0) fail(plan, STEP_CHDIR, errno, 0);
  ORRERY_TRACE(TR_IDENTITY);
  close_other_fds(plan);
  ORRERY_TRACE(TR_CLOSE_FDS);
  if (plan->workload_path) exec_workload_then_init(plan);
  ORRERY_TRACE(TR_EXEC);
  execve(plan->exec_path, plan->exec_argv, plan->envp);
  fail(plan, STEP_EXECVE, errno, 0);
  return 127;
}
