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
 * has exec'd.
 *
 * It is built without a C library (init_sys.h says why: glibc's startup alone costs ten times
 * what the rest of a spawn's init does on a virtual machine). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "init_sys.h"
#include "protocol.h"

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
static char **environ_;

void *memset(void *s, int c, size_t n) {
  volatile unsigned char *p = s;
  while (n--) *p++ = (unsigned char)c;
  return s;
}

void *memcpy(void *d, const void *s, size_t n) {
  volatile unsigned char *q = d;
  const unsigned char *p = s;
  while (n--) *q++ = *p++;
  return d;
}

static __attribute__((noreturn)) void exit_now(int code) {
  for (;;) SYS(SYS_exit_group, code, 0, 0, 0, 0, 0);
}

/* "orrery-init: WHAT[: errno N]\n" on stderr: the runtime points it at the replica's log. */
static void say(const char *what, int err) {
  char buf[160];
  size_t n = 0;
  const char *parts[] = {"orrery-init: ", what};
  for (size_t p = 0; p < 2; p++)
    for (const char *s = parts[p]; *s && n < sizeof buf - 32; s++) buf[n++] = *s;
  if (err) {
    const char *e = ": errno ";
    while (*e) buf[n++] = *e++;
    n += (size_t)fmt_uint(buf + n, (unsigned long)err);
  }
  buf[n++] = '\n';
  SYS(SYS_write, 2, buf, n, 0, 0, 0);
}

static __attribute__((noreturn)) void report_setup_failure(int step, int err) {
  if (err_fd >= 0) {
    struct orrery_exec_error rec = {.step = step, .err = err, .index = 0};
    SYS(SYS_write, err_fd, &rec, sizeof rec, 0, 0, 0);
  } else {
    say("setup failed", err);
  }
  exit_now(127);
}

static int parse_number(const char *s) {
  long v = 0;
  if (!*s) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > 1 << 30) return -1;
    v = v * 10 + (*s - '0');
  }
  return v > 1 << 30 ? -1 : (int)v;
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
  size_t len = 0;
  const char *word = WIFSIGNALED(wstatus) ? "killed " : "exited ";
  while (*word) buf[len++] = *word++;
  if (WIFSIGNALED(wstatus)) {
    int sig = WTERMSIG(wstatus);
    const char *name = sig > 0 && sig < (int)(sizeof signal_names / sizeof *signal_names) ? signal_names[sig] : NULL;
    if (name) {
      while (*name) buf[len++] = *name++;
    } else {
      len += (size_t)fmt_uint(buf + len, (unsigned long)sig);
    }
  } else {
    len += (size_t)fmt_uint(buf + len, (unsigned long)WEXITSTATUS(wstatus));
  }
  buf[len++] = '\n';
  /* Best effort: if the record cannot be written the runtime still has init's exit code. */
  int err = 0;
  if (sys_ret(SYS(SYS_pwrite64, status_fd, buf, len, 0, 0, 0), &err) != (long)len) say("exit status file", err);
  SYS(SYS_close, status_fd, 0, 0, 0, 0, 0);
}

/* Reap every zombie: orphans of the namespace are re-parented to us. This is the only
 * waitpid(-1) in Orrery, and it runs in orrery-init, never in the Node process. When the
 * workload is among them, record its status and exit the same way. */
static void reap_all(int child) {
  for (;;) {
    int wstatus = 0;
    long pid = SYS(SYS_wait4, -1, &wstatus, WNOHANG, 0, 0, 0);
    if (pid <= 0) return;
    if (pid != child) continue;
    write_status(wstatus);
    exit_now(WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus) : WEXITSTATUS(wstatus));
  }
}

static int fork_workload(const char *file, char **child_argv, const ksigset_t *orig) {
  int err = 0;
  long child = sys_ret(SYS(SYS_clone, SIGCHLD, 0, 0, 0, 0, 0), &err);
  if (child < 0) report_setup_failure(STEP_INIT_FORK, err);
  if (child == 0) {
    struct ksigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    for (int sig = 1; sig < 32; sig++) {
      if (forwardable(sig)) SYS(SYS_rt_sigaction, sig, &dfl, 0, KSIGSET_SIZE, 0, 0);
    }
    SYS(SYS_rt_sigprocmask, SIG_SETMASK, orig, 0, KSIGSET_SIZE, 0, 0);
    err = -(int)SYS(SYS_execve, file, child_argv, environ_, 0, 0, 0);
    if (err_fd >= 0) {
      struct orrery_exec_error rec = {.step = STEP_EXECVE, .err = err, .index = 0};
      SYS(SYS_write, err_fd, &rec, sizeof rec, 0, 0, 0);
    } else {
      say("execve failed", err);
    }
    exit_now(127);
  }
  if (err_fd >= 0) SYS(SYS_close, err_fd, 0, 0, 0, 0, 0);
  return (int)child;
}

static int init_main(int argc, char **argv) {
  int child = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (str_eq(argv[i], "--")) {
      i++;
      break;
    }
    if (i + 1 >= argc) break;
    if (str_eq(argv[i], "-p")) child = parse_number(argv[++i]);
    else if (str_eq(argv[i], "-e")) err_fd = parse_number(argv[++i]);
    else if (str_eq(argv[i], "-s")) status_fd = parse_number(argv[++i]);
    else {
      say("unknown option", 0);
      return 127;
    }
  }
  if (child <= 0 && i + 1 >= argc) {
    say("usage: orrery-init -p PID [-s STATUSFD] | [-e ERRFD] [-s STATUSFD] -- FILE ARGV0 [ARGS...]", 0);
    return 127;
  }

  int err = 0;
  if (err_fd >= 0 && sys_ret(SYS(SYS_fcntl, err_fd, F_SETFD, FD_CLOEXEC, 0, 0, 0), &err) < 0)
    report_setup_failure(STEP_INIT_SETUP, err);
  if (status_fd >= 0 && sys_ret(SYS(SYS_fcntl, status_fd, F_SETFD, FD_CLOEXEC, 0, 0, 0), &err) < 0)
    report_setup_failure(STEP_INIT_SETUP, err);
  /* Without a pid namespace we are not PID 1: become the subreaper so orphans of the workload
   * are still reaped here rather than by the host's init (prctl(2), Linux 3.4). */
  if (SYS(SYS_getpid, 0, 0, 0, 0, 0, 0) != 1 &&
      sys_ret(SYS(SYS_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0), &err) < 0)
    report_setup_failure(STEP_INIT_SETUP, err);

  /* Everything stays blocked and is taken by sigwaitinfo; no handlers. A pid-namespace init
   * (SIGNAL_UNKILLABLE) drops a signal at SIG_DFL only when it is *not* blocked: blocked signals
   * are queued whatever their disposition (kernel/signal.c, sig_ignored: "Blocked signals are
   * never ignored"), which is what tini relies on as well. In adopt mode the mask is already full
   * (inherited across execve from the spawning child), so nothing sent before this point is lost.
   * All 64 bits: the real-time signals are forwarded too. */
  ksigset_t all = ~(ksigset_t)0, orig = 0;
  if (sys_ret(SYS(SYS_rt_sigprocmask, SIG_BLOCK, &all, &orig, KSIGSET_SIZE, 0, 0), &err) < 0)
    report_setup_failure(STEP_INIT_SETUP, err);

  if (child <= 0) child = fork_workload(argv[i], argv + i + 1, &orig);

  /* In adopt mode the workload may have exited before we blocked SIGCHLD (its SIGCHLD was then
   * discarded: SIG_DFL for SIGCHLD means ignore), so look once before waiting for signals. */
  reap_all(child);
  for (;;) {
    unsigned char info[128]; /* siginfo_t: the kernel writes 128 bytes */
    long sig = SYS(SYS_rt_sigtimedwait, &all, info, 0, KSIGSET_SIZE, 0, 0);
    if (sig < 0) {
      if (sig != -EINTR) say("sigwaitinfo", (int)-sig);
      continue;
    }
    if (sig == SIGCHLD) reap_all(child);
    else if (forwardable((int)sig)) {
      long r = SYS(SYS_kill, child, sig, 0, 0, 0, 0);
      if (r < 0 && r != -ESRCH) say("kill", (int)-r);
    }
  }
}

/* Called by _start (init_sys.h) with the initial stack: argc, argv[], NULL, envp[], NULL. */
__attribute__((noreturn, used)) void init_start(long *sp) {
  int argc = (int)sp[0];
  char **argv = (char **)(sp + 1);
  environ_ = argv + argc + 1;
  exit_now(init_main(argc, argv));
}
