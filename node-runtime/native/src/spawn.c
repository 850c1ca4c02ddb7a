/* The parent side of a spawn: open everything the child needs (so the child resolves no path it
 * does not have to), build the plan, clone, then read the exec-error pipe (protocol.h). */
#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>

#include "fd.h"
#include "pidfd.h"
#include "proc.h"
#include "spawn_request.h"
#include "status_file.h"
#include "trace.h"

static const char *const step_names[STEP__COUNT] = {
    [STEP_NONE] = "unknown",
    [STEP_SIGNALS] = "signals",
    [STEP_SETSID] = "setsid",
    [STEP_CGROUP_PROCS] = "cgroup.procs",
    [STEP_SETHOSTNAME] = "sethostname",
    [STEP_MOUNT_PRIVATE] = "mount-private",
    [STEP_MOUNT_PROC] = "mount-proc",
    [STEP_LOOPBACK] = "loopback",
    [STEP_OPEN_LOG] = "open-log",
    [STEP_OPEN_DEVNULL] = "open-devnull",
    [STEP_DUP2] = "dup2",
    [STEP_SETGROUPS] = "setgroups",
    [STEP_SETGID] = "setgid",
    [STEP_SETUID] = "setuid",
    [STEP_NO_NEW_PRIVS] = "no_new_privs",
    [STEP_CHDIR] = "chdir",
    [STEP_CLOSE_FDS] = "close_range",
    [STEP_EXECVE] = "execve",
    [STEP_EXECVE_INIT] = "execve-init",
    [STEP_INIT_FORK] = "init-fork",
    [STEP_INIT_SETUP] = "init-setup",
    [STEP_EXIT_STATUS_FILE] = "exit-status-file",
    [STEP_SETNS] = "setns",
    [STEP_USERNS] = "userns",
    [STEP_RLIMIT] = "rlimit",
    [STEP_MASK] = "mask",
    [STEP_ROOT] = "root",
    [STEP_VOLUME] = "volume",
};

static int fail(struct orrery_spawn_result *res, const char *step, int err, const char *path) {
  res->step = step;
  res->err = err;
  res->path = path;
  return -1;
}

/* argv for orrery-init in adopt mode: init -p <workload pid> [-s <statusfd>] (init.c); the child
 * writes the pid into pid_slot once it knows it, and the fd into fd_str if it opens the file. */
static void init_argv(char **argv, int with_status, char *pid_slot, char *fd_str) {
  size_t i = 0;
  argv[i++] = (char *)"orrery-init";
  argv[i++] = (char *)"-p";
  argv[i++] = pid_slot;
  if (with_status) {
    argv[i++] = (char *)"-s";
    argv[i++] = fd_str;
  }
  argv[i] = NULL;
}

static uint64_t boottime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* /proc/<pid>/stat field 22, read the slow way; 0 if it cannot be read. */
static uint64_t read_start_time(pid_t pid) {
  char buf[1024];
  if (orrery_read_proc_stat(pid, buf, sizeof buf) <= 0) return 0;
  const char *p = orrery_stat_field(buf, 22);
  return p ? strtoull(p, NULL, 10) : 0;
}

/* The start time of the process we just cloned without reading /proc (a third of a spawn's JS
 * work): the kernel stamps task->start_boottime = ktime_get_boottime_ns() inside copy_process
 * (kernel/fork.c), so it lies between CLOCK_BOOTTIME read before the clone syscall and after it
 * returned; /proc shows it as nsec_to_clock_t(), a plain division by NSEC_PER_SEC / USER_HZ
 * (fs/proc/array.c, kernel/time/time.c), both shifted alike by a time namespace. When the two
 * readings fall in the same tick (all but ~clone time / 10 ms of spawns) that tick is the answer;
 * otherwise read /proc/<pid>/stat. */
static uint64_t start_time_of(pid_t pid, uint64_t before_ns, uint64_t after_ns) {
  static uint64_t ns_per_tick;
  if (!ns_per_tick) {
    long hz = sysconf(_SC_CLK_TCK);
    ns_per_tick = hz > 0 && 1000000000L % hz == 0 ? 1000000000ull / (uint64_t)hz : 0;
  }
  if (ns_per_tick && before_ns / ns_per_tick == after_ns / ns_per_tick) return before_ns / ns_per_tick;
  return read_start_time(pid);
}

/* Reap a child we just started and that failed before (or at) execve: it has exited or is about
 * to, so a blocking waitid on exactly its pidfd is short and steals nobody else's exit. */
static void reap(int pidfd) {
  siginfo_t info;
  TEMP_FAILURE_RETRY(waitid((idtype_t)ORRERY_P_PIDFD, (id_t)pidfd, &info, WEXITED));
  close(pidfd);
}

/* The namespaces of req->join_pid to join, as nsenter opens them (/proc/<pid>/ns/<name>, Linux
 * 3.8), in nsenter's order with mount last. A joined pid namespace holds the child's children
 * only (pid_namespaces(7)): the init-mode workload, cloned after the joins. Once they are open the pid is checked against the
 * pidfd: if it had died and been reused in between, the files could name a stranger's. */
static int open_join_namespaces(struct orrery_spawn_plan *plan, const struct orrery_spawn_request *req) {
  static const struct {
    uint64_t flag;
    const char *name;
  } order[] = {{CLONE_NEWIPC, "ipc"}, {CLONE_NEWUTS, "uts"}, {CLONE_NEWNET, "net"},
               {CLONE_NEWPID, "pid"}, {CLONE_NEWNS, "mnt"}};
  for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
    if (!(req->join_ns_flags & order[i].flag)) continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)req->join_pid, order[i].name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    plan->join_ns_fds[plan->n_join_ns] = fd;
    plan->join_ns_types[plan->n_join_ns++] = (int)order[i].flag;
  }
  return orrery_pidfd_alive(req->join_pidfd);
}

/* newuidmap's job, done by us (CAP_SETUID and CAP_SETGID in the parent namespace): one range,
 * ids 0..count-1 of the child's new user namespace onto the replica's host range. A map can be
 * written once, by a process outside, while the child waits (child.c, enter_user_namespace). */
static int write_id_map(pid_t pid, const char *file, unsigned long host, unsigned long count) {
  char path[64], line[64];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
  int len = snprintf(line, sizeof line, "0 %lu %lu\n", host, count);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, line, (size_t)len);
  int err = errno;
  close(fd);
  if (n == len) return 0;
  errno = n < 0 ? err : EIO;
  return -1;
}

/* Map the child's user namespace and let it go on; on failure it is killed (the caller reaps it:
 * it runs on our memory and must be gone before orrery_spawn returns) and the step is named. The
 * sync fds are closed with the others: the child reads their numbers from the plan. */
static int map_user_namespace(const struct orrery_spawn_request *req, struct orrery_spawn_plan *plan, pid_t pid,
                              int pidfd, struct orrery_spawn_result *res) {
  const char *step = "uid_map";
  int ok = write_id_map(pid, "uid_map", req->host_uid, req->id_count) == 0;
  if (ok) {
    step = "gid_map";
    ok = write_id_map(pid, "gid_map", req->host_gid, req->id_count) == 0;
  }
  int err = errno;
  /* Before the go: the child reads the plan only after it has the byte. */
  if (ok) orrery_plan_rlimits(plan);
  if (ok && TEMP_FAILURE_RETRY(write(plan->userns_sync[1], "1", 1)) != 1) {
    ok = 0;
    err = errno;
    step = "userns";
  }
  if (ok) return 0;
  syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
  return fail(res, step, err, NULL);
}

/* What a clone that worked leaves for the wait on its exec. */
struct cloned {
  pid_t pid;
  int pidfd;
  void *stack;                  /* the child stacks (orrery_clone) */
  int v2_procs_index;           /* the plan's, for a cgroup.procs failure's path */
  uint64_t before_ns, after_ns; /* CLOCK_BOOTTIME around the clone (start_time_of) */
};

/* The second half of a spawn: read the exec-error pipe, whose write ends only the child (and in
 * init mode the workload) still hold. Takes read_fd and the stacks; the pidfd too on failure. */
static int await_exec(const struct orrery_spawn_request *req, struct orrery_spawn_result *res, int read_fd,
                      const struct cloned *child) {
  struct orrery_exec_error rec;
  ssize_t n = TEMP_FAILURE_RETRY(read(read_fd, &rec, sizeof rec));
  int read_err = errno;
  ORRERY_TRACE(TR_EOF);
  close(read_fd);
  /* EOF or a record: every task that could run on the child stacks has exec'd or exited. */
  orrery_clone_release_stack(child->stack);
  if (n == 0) {
    res->pid = child->pid;
    res->pidfd = child->pidfd;
    /* The process exists until we reap it (we hold the only waiter), so /proc has it if needed. */
    res->start_time = start_time_of(child->pid, child->before_ns, child->after_ns);
    ORRERY_TRACE(TR_DONE);
    return 0;
  }
  /* The child (or init) failed: it exits 127 right after writing; reap it before reporting. */
  reap(child->pidfd);
  if (n < 0) return fail(res, "read-exec-pipe", read_err, NULL);
  if (n != (ssize_t)sizeof rec || rec.step <= STEP_NONE || rec.step >= STEP__COUNT)
    return fail(res, "unknown", EPROTO, NULL);
  const char *path = NULL;
  switch (rec.step) {
  case STEP_EXECVE: path = req->file; break;
  case STEP_EXECVE_INIT: path = req->init_path; break;
  case STEP_OPEN_LOG: path = req->log_path; break;
  case STEP_EXIT_STATUS_FILE: path = req->exit_status_file; break;
  case STEP_CHDIR: path = req->cwd; break;
  case STEP_MASK: path = req->mask_paths ? req->mask_paths[rec.index] : NULL; break;
  case STEP_ROOT: path = req->root; break;
  case STEP_VOLUME: path = rec.index >= 0 && rec.index < req->n_binds ? req->binds[rec.index].target : NULL; break;
  case STEP_CGROUP_PROCS:
    path = rec.index == child->v2_procs_index ? req->v2_dir
           : (rec.index >= 0 && rec.index < req->n_procs_files) ? req->procs_files[rec.index]
                                                                : NULL;
    break;
  default: break;
  }
  return fail(res, step_names[rec.step], rec.err, path);
}

/* A host path's detached mount: `path` looked up below `root` as if it were "/" (RESOLVE_IN_ROOT)
 * and through no symbolic link at all (RESOLVE_NO_SYMLINKS, ELOOP: openat2(2), Linux 5.6), so the
 * path the API server's policy allowed is the one mounted, whatever a workload that can write
 * below it has put there; then cloned from that fd (AT_EMPTY_PATH), only the mount at the path,
 * not those below it (no AT_RECURSIVE: a read-only bind would keep writable submounts). */
static int open_tree_in_root(const char *root, const char *path) {
  int root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) return -1;
  struct orrery_open_how how = {.flags = O_PATH | O_CLOEXEC,
                                .resolve = ORRERY_RESOLVE_IN_ROOT | ORRERY_RESOLVE_NO_SYMLINKS |
                                           ORRERY_RESOLVE_NO_MAGICLINKS};
  int path_fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
  int err = errno;
  close(root_fd);
  if (path_fd < 0) {
    errno = err;
    return -1;
  }
  int fd = (int)syscall(SYS_open_tree, path_fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  err = errno;
  close(path_fd);
  errno = err;
  return fd;
}

/* A volume as a detached mount (open_tree(2) with OPEN_TREE_CLONE, Linux 5.2): made here, as root
 * in the runtime's namespaces, the child only attaches it (move_mount) and never has to reach the
 * source through the runtime's 0700 directories. nosuid and nodev always, read-only when asked
 * (mount_setattr(2), 5.12). Closing the fd without attaching it unmounts it. */
static int open_bind(const struct orrery_bind *b) {
  int fd = b->root ? open_tree_in_root(b->root, b->source)
                   : (int)syscall(SYS_open_tree, AT_FDCWD, b->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (fd < 0) return -1;
  struct mount_attr attr = {
      .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (b->read_only ? MOUNT_ATTR_RDONLY : 0)};
  if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* Open what the child needs, clone, then close our copies of it (the child has its own: CLONE_VM
 * does not share the fd table) and wait for the exec. A failure records itself with fail() where
 * it happens (errno is still the call's) and jumps to the label that closes what was opened before
 * it, in reverse order. After the clone, whether it worked or not, our write end of the pipe goes
 * at once and the same labels run in full; the read end then goes to await_exec if there is a
 * child. */
int orrery_spawn(const struct orrery_spawn_request *req, struct orrery_spawn_result *res) {
  struct orrery_spawn_plan plan;
  memset(&plan, 0, sizeof plan);
  plan.cgroup_dir_fd = -1;
  plan.v2_procs_index = -1;
  plan.keep_fds[0] = plan.keep_fds[1] = -1;
  plan.log_fd = -1;
  plan.exec_fd = -1;
  plan.userns_sync[0] = plan.userns_sync[1] = -1;
  plan.n_rlimits = -1;
  int pipe_fds[2] = {-1, -1};
  int status_fd = -1;
  char *argv_init[8];
  char pid_slot[16] = "";
  char fd_str[16] = "";
  struct cloned child = {.pid = -1, .pidfd = -1, .stack = NULL};
  const char *step = NULL;
  int rc = -1;
  int map_failed = 0;
  char *source_dirs = NULL; /* the child's bind_source_dirs, freed once it has exec'd or died */
  struct orrery_spawn_result rc_res;
  memset(&rc_res, 0, sizeof rc_res);

  if (orrery_trace_on) orrery_trace_reset();
  ORRERY_TRACE(TR_ENTER);
  /* Nothing is open before the pipe. */
  if (req->n_procs_files > ORRERY_MAX_PROCS_FDS - 1)
    return fail(res, "cgroup.procs", E2BIG, NULL);
  if (req->n_binds > ORRERY_MAX_BINDS) return fail(res, "volume", E2BIG, NULL);
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) return fail(res, "pipe2", errno, NULL);
  /* The exit status file is orrery-init's: without init there is none. A fresh, empty file, so a
   * stale record from a previous run can never be mistaken for this one, made empty the way that
   * is cheapest on its filesystem (status_file.h: truncated on tmpfs, unlinked and created afresh
   * on ext4, whose auto_da_alloc flushes a truncated file on close). The child creates it (spawn.h, status_path) unless it drops
   * privileges before it could, has a user namespace (its host uid may not write there), masks
   * paths (the file's directory may be one) or pivots into a workload root (where the path names
   * another file): then it must exist, owned by us, before the clone. */
  int child_creates_status = req->init && req->exit_status_file && !req->has_uid && !req->has_gid &&
                             !req->userns && !(req->mask_paths && req->mask_paths[0]) && !req->root;
  if (req->init && req->exit_status_file && !child_creates_status) {
    status_fd = orrery_fresh_status_file(req->exit_status_file, 1);
    if (status_fd < 0) {
      rc = fail(res, "exit-status-file", errno, req->exit_status_file);
      goto out_pipe;
    }
    ORRERY_TRACE(TR_STATUS_FILE);
  }
  /* The log file too: the child's host identity may not reach the log directory. O_NOFOLLOW: a
   * workload that could plant a symlink there would not have us append to its target. */
  plan.log_fd = open(req->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (plan.log_fd < 0) {
    rc = fail(res, "open-log", errno, req->log_path);
    goto out_procs;
  }
  /* orrery-init by descriptor: a replica's host uid must be able to exec it, not to reach the
   * package's directory (a checkout in a 0750 home directory). */
  if (req->init) {
    plan.exec_fd = open(req->init_path, O_PATH | O_CLOEXEC);
    if (plan.exec_fd < 0) {
      rc = fail(res, "execve-init", errno, req->init_path);
      goto out_procs;
    }
  }
  if (req->userns && pipe2(plan.userns_sync, O_CLOEXEC) < 0) {
    rc = fail(res, "pipe2", errno, NULL);
    goto out_procs;
  }
  for (int i = 0; i < req->n_procs_files; i++) {
    int fd = open(req->procs_files[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      rc = fail(res, "cgroup.procs", errno, req->procs_files[i]);
      goto out_procs;
    }
    plan.procs_fds[plan.n_procs_fds++] = fd;
  }
  if (req->join_ns_flags && open_join_namespaces(&plan, req) < 0) {
    rc = fail(res, "setns", errno, NULL);
    goto out_join;
  }
  /* With a user namespace a read-only volume must be locked (README.md, "Locked volumes"). One
   * whose source is already a read-only mount of ours, not below a root, is locked by the clone
   * itself: the child clones it from its copy (bind_sources). Any other needs the mount helper,
   * which then attaches them all. */
  int child_clones = req->userns && req->n_binds > 0;
  for (int i = 0; i < req->n_binds && child_clones; i++) {
    struct statvfs st;
    if (req->binds[i].read_only && (req->binds[i].root || statvfs(req->binds[i].source, &st) < 0 ||
                                    !(st.f_flag & ST_RDONLY)))
      child_clones = 0;
  }
  if (child_clones) {
    size_t total = 0;
    for (int i = 0; i < req->n_binds; i++) total += strlen(req->binds[i].source) + 2;
    source_dirs = malloc(total);
    if (!source_dirs) {
      rc = fail(res, "volume", ENOMEM, NULL);
      goto out_join;
    }
  }
  char *next_dir = source_dirs;
  for (int i = 0; i < req->n_binds; i++) {
    if (child_clones && req->binds[i].read_only) {
      const char *src = req->binds[i].source;
      const char *slash = strrchr(src, '/');
      size_t dir_len = slash == src ? 1 : (size_t)(slash - src);
      memcpy(next_dir, src, dir_len);
      next_dir[dir_len] = 0;
      plan.bind_fds[plan.n_binds] = -1;
      plan.bind_sources[plan.n_binds] = src;
      plan.bind_source_dirs[plan.n_binds] = next_dir;
      plan.bind_source_names[plan.n_binds] = slash[1] ? slash + 1 : ".";
      plan.bind_targets[plan.n_binds++] = req->binds[i].target;
      next_dir += dir_len + 1;
      continue;
    }
    int fd = open_bind(&req->binds[i]);
    if (fd < 0) {
      rc = fail(res, "volume", errno, req->binds[i].source);
      goto out_join;
    }
    plan.bind_fds[plan.n_binds] = fd;
    plan.bind_targets[plan.n_binds++] = req->binds[i].target;
  }
  if (req->v2_dir) {
    plan.cgroup_dir_fd = open(req->v2_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (plan.cgroup_dir_fd < 0) {
      rc = fail(res, "cgroup.v2Dir", errno, req->v2_dir);
      goto out_join;
    }
  }

  plan.envp = req->env;
  plan.cwd = req->cwd;
  plan.hostname = req->hostname;
  plan.ns_flags = req->ns_flags | (req->userns ? CLONE_NEWUSER : 0);
  plan.mount_proc = (req->ns_flags & CLONE_NEWNS) && (req->ns_flags & CLONE_NEWPID);
  plan.loopback = (req->ns_flags & CLONE_NEWNET) != 0;
  plan.lock_binds = req->userns && plan.n_binds > 0 && !child_clones;
  plan.mask_paths = req->mask_paths;
  plan.root = req->root;
  plan.has_uid = req->has_uid;
  plan.has_gid = req->has_gid;
  plan.uid = req->uid;
  plan.gid = req->gid;
  plan.err_fd = pipe_fds[1];
  if (req->init) {
    if (status_fd >= 0) snprintf(fd_str, sizeof fd_str, "%d", status_fd);
    init_argv(argv_init, status_fd >= 0 || child_creates_status, pid_slot, fd_str);
    if (child_creates_status) {
      plan.status_path = req->exit_status_file;
      plan.status_fd_slot = fd_str;
    }
    plan.exec_path = req->init_path;
    plan.exec_argv = argv_init;
    plan.keep_fds[0] = status_fd;
    plan.workload_path = req->file;
    plan.workload_argv = req->argv;
    plan.pid_slot = pid_slot;
  } else {
    plan.exec_path = req->file;
    plan.exec_argv = req->argv;
  }

  ORRERY_TRACE(TR_PREPARED);
  child.before_ns = boottime_ns();
  child.pid = orrery_clone(&plan, &child.pidfd, &step, &child.stack);
  if (child.pid < 0)
    rc = fail(res, step, errno, strcmp(step, "volume") == 0 ? req->binds[plan.helper_bind_index].target : NULL);
  child.after_ns = boottime_ns();
  ORRERY_TRACE(TR_CLONE_RETURNED);
  child.v2_procs_index = plan.v2_procs_index;
  if (child.pid >= 0 && req->userns && map_user_namespace(req, &plan, child.pid, child.pidfd, &rc_res) < 0) {
    /* Killed: the error pipe gives EOF once it is gone, then it is reaped below. */
    map_failed = 1;
  }
  /* Our write end goes first: until it is closed, a clone on another thread (spawnAsync) copies it
   * into its child, and our read below then waits for that child's exec too. */
  close(pipe_fds[1]);
  pipe_fds[1] = -1;
  orrery_close_fd(plan.cgroup_dir_fd);
out_join:
  orrery_close_fds(plan.bind_fds, plan.n_binds);
  orrery_close_fds(plan.join_ns_fds, plan.n_join_ns);
out_procs:
  /* With v2Dir/cgroup.procs, if orrery_clone opened it (add_v2_procs_fd). */
  orrery_close_fds(plan.procs_fds, plan.n_procs_fds);
  orrery_close_fds(plan.userns_sync, 2);
  orrery_close_fd(plan.log_fd);
  orrery_close_fd(plan.exec_fd);
  orrery_close_fd(status_fd);
out_pipe:
  orrery_close_fd(pipe_fds[1]);
  if (child.pid < 0) {
    close(pipe_fds[0]);
    free(source_dirs);
    return rc;
  }
  if (map_failed) {
    /* EOF or the killed child's record: nothing runs on the child stacks any more. */
    struct orrery_exec_error ignored;
    (void)!TEMP_FAILURE_RETRY(read(pipe_fds[0], &ignored, sizeof ignored));
    close(pipe_fds[0]);
    orrery_clone_release_stack(child.stack);
    reap(child.pidfd);
    free(source_dirs);
    *res = rc_res;
    return -1;
  }
  rc = await_exec(req, res, pipe_fds[0], &child);
  free(source_dirs);
  return rc;
}
