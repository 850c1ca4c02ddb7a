/* orrery-init: the PID 1 of a replica's pid namespace (like tini or docker-init).
 *
 *   orrery-init -p PID [-s STATUSFD]                          (adopt mode, used by the runtime)
 *   orrery-init [-e ERRFD] [-s STATUSFD] -- FILE ARGV0 [ARGS...]   (fork mode, standalone)
 *
 * In adopt mode the process that execs us has already started the workload as its child PID (see
 * child.c: one scheduling hop less than forking here) and blocked every signal. In fork mode it
 * forks and execs the workload (FILE with argv ARGV0 ARGS..., the environment untouched). Either
 * way it forwards every asynchronous signal it receives to the workload, reaps every zombie of the
 * namespace, and when the workload exits, exits the same way. The init of a pid namespace cannot
 * be killed by a signal it sends itself (pid_namespaces(7): only SIGKILL/SIGSTOP from an ancestor
 * namespace reach it without a handler), so a workload killed by SIGNAL makes init write
 * "killed SIGNAL\n" to STATUSFD and _exit(128 + signal number); a normal exit writes
 * "exited CODE\n" and exits CODE. The runtime maps the record back (see README.md).
 *
 * ERRFD is the runtime's exec-error pipe (protocol.h): if the workload's execve fails, the forked
 * child writes {STEP_EXECVE, errno} there, so the runtime reports ExecFailed exactly as without
 * init. Init's own copy is closed right after fork, so the runtime reads EOF once the workload
 * has exec'd. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "protocol.h"

extern char **environ;

static const char *const signal_names[] = {
    [SIGHUP] = "SIGHUP",   [SIGINT] = "SIGINT",       [SIGQUIT] = "SIGQUIT",   [SIGILL] = "SIGILL",
    [SIGTRAP] = "SIGTRAP", [SIGABRT] = "SIGABRT",     [SIGBUS] = "SIGBUS",     [SIGFPE] = "SIGFPE",
    [SIGKILL] = "SIGKILL", [SIGUSR1] = "SIGUSR1",     [SIGSEGV] = "SIGSEGV",   [SIGUSR2] = "SIGUSR2",
    [SIGPIPE] = "SIGPIPE", [SIGALRM] = "SIGALRM",     [SIGTERM] = "SIGTERM",   [SIGSTKFLT] = "SIGSTKFLT",
    [SIGCHLD] = "SIGCHLD", [SIGCONT] = "SIGCONT",     [SIGSTOP] = "SIGSTOP",   [SIGTSTP] = "SIGTSTP",
    [SIGTTIN] = "SIGTTIN", [SIGTTOU] = "SIGTTOU",     [SIGURG] = "SIGURG",     [SIGXCPU] = "SIGXCPU",
    [SIGXFSZ] = "SIGXFSZ", [SIGVTALRM] = "SIGVTALRM", [SIGPROF] = "SIGPROF",   [SIGWINCH] = "SIGWINCH",
    [SIGIO] = "SIGIO",     [SIGPWR] = "SIGPWR",       [SIGSYS] = "SIGSYS",
};

static int err_fd = -1;
static int status_fd = -1;

static void report_setup_failure(int step, int err) {
  if (err_fd >= 0) {
    struct orrery_exec_error rec = {.step = step, .err = err, .index = 0};
    (void)!write(err_fd, &rec, sizeof rec);
  } else {
    fprintf(stderr, "orrery-init: step %d failed: %s\n", step, strerror(err));
  }
  _exit(127);
}

static int parse_number(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0 || v > 1 << 30) return -1;
  return (int)v;
}

/* Signals that only the kernel raises synchronously for a faulting thread, or that concern
 * init's own terminal: never forwarded (tini makes the same choice). */
static int forwardable(int sig) {
  switch (sig) {
  case SIGCHLD: case SIGFPE: case SIGILL: case SIGSEGV: case SIGBUS: case SIGABRT: case SIGTRAP:
  case SIGSYS: case SIGTTIN: case SIGTTOU: case SIGKILL: case SIGSTOP:
    return 0;
  default:
    return 1;
  }
}

static void write_status(int wstatus) {
  if (status_fd < 0) return;
  char buf[64];
  int len;
  if (WIFSIGNALED(wstatus)) {
    int sig = WTERMSIG(wstatus);
    const char *name = sig > 0 && sig < (int)(sizeof signal_names / sizeof *signal_names) ? signal_names[sig] : NULL;
    len = name ? snprintf(buf, sizeof buf, "killed %s\n", name) : snprintf(buf, sizeof buf, "killed %d\n", sig);
  } else {
    len = snprintf(buf, sizeof buf, "exited %d\n", WEXITSTATUS(wstatus));
  }
  /* Best effort: if the record cannot be written the runtime still has init's exit code. */
  if (pwrite(status_fd, buf, (size_t)len, 0) != len) perror("orrery-init: exit status file");
  close(status_fd);
}

/* Reap every zombie: orphans of the namespace are re-parented to us. This is the only
 * waitpid(-1) in Orrery, and it runs in orrery-init, never in the Node process. When the
 * workload is among them, record its status and exit the same way. */
static void reap_all(pid_t child) {
  for (;;) {
    int wstatus;
    pid_t pid = waitpid(-1, &wstatus, WNOHANG);
    if (pid <= 0) return;
    if (pid != child) continue;
    write_status(wstatus);
    if (WIFSIGNALED(wstatus)) _exit(128 + WTERMSIG(wstatus));
    _exit(WEXITSTATUS(wstatus));
  }
}

static pid_t fork_workload(const char *file, char **child_argv, const sigset_t *orig) {
  pid_t child = fork();
  if (child < 0) report_setup_failure(STEP_INIT_FORK, errno);
  if (child == 0) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 32; sig++) /* the standard signals; 32 and 33 belong to glibc */ {
      if (forwardable(sig)) sigaction(sig, &dfl, NULL);
    }
    sigprocmask(SIG_SETMASK, orig, NULL);
    execve(file, child_argv, environ);
    struct orrery_exec_error rec = {.step = STEP_EXECVE, .err = errno, .index = 0};
    if (err_fd >= 0) (void)!write(err_fd, &rec, sizeof rec);
    else fprintf(stderr, "orrery-init: execve %s: %s\n", file, strerror(errno));
    _exit(127);
  }
  if (err_fd >= 0) close(err_fd);
  return child;
}


int main(int argc, char **argv) {
  pid_t child = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    }
    if (i + 1 >= argc) break;
    if (strcmp(argv[i], "-p") == 0) child = parse_number(argv[++i]);
    else if (strcmp(argv[i], "-e") == 0) err_fd = parse_number(argv[++i]);
    else if (strcmp(argv[i], "-s") == 0) status_fd = parse_number(argv[++i]);
    else {
      fprintf(stderr, "orrery-init: unknown option %s\n", argv[i]);
      return 127;
    }
  }
  if (child <= 0 && i + 1 >= argc) {
    fprintf(stderr, "usage: orrery-init -p PID [-s STATUSFD] | [-e ERRFD] [-s STATUSFD] -- FILE ARGV0 [ARGS...]\n");
    return 127;
  }

  if (err_fd >= 0 && fcntl(err_fd, F_SETFD, FD_CLOEXEC) < 0) report_setup_failure(STEP_INIT_SETUP, errno);
  if (status_fd >= 0 && fcntl(status_fd, F_SETFD, FD_CLOEXEC) < 0) report_setup_failure(STEP_INIT_SETUP, errno);
  /* Without a pid namespace we are not PID 1: become the subreaper so orphans of the workload
   * are still reaped here rather than by the host's init (prctl(2), Linux 3.4). */
  if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) report_setup_failure(STEP_INIT_SETUP, errno);

  /* Everything stays blocked and is taken by sigwaitinfo; no handlers. A pid-namespace init
   * (SIGNAL_UNKILLABLE) drops a signal at SIG_DFL only when it is *not* blocked: blocked signals
   * are queued whatever their disposition (kernel/signal.c, sig_ignored: "Blocked signals are
   * never ignored"), which is what tini relies on as well. In adopt mode the mask is already full
   * (inherited across execve from the spawning child), so nothing sent before this point is lost. */
  sigset_t all, orig;
  sigfillset(&all);
  if (sigprocmask(SIG_BLOCK, &all, &orig) < 0) report_setup_failure(STEP_INIT_SETUP, errno);

  if (child <= 0) child = fork_workload(argv[i], argv + i + 1, &orig);

  /* In adopt mode the workload may have exited before we blocked SIGCHLD (its SIGCHLD was then
   * discarded: SIG_DFL for SIGCHLD means ignore), so look once before waiting for signals. */
  reap_all(child);
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&all, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      perror("orrery-init: sigwaitinfo");
      continue;
    }
    if (sig == SIGCHLD) reap_all(child);
    else if (forwardable(sig) && kill(child, sig) < 0 && errno != ESRCH) perror("orrery-init: kill");
  }
}
