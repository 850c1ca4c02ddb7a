/* pidfd operations: open (pidfd_open, 5.3), signal (pidfd_send_signal, 5.1), exit status
 * (waitid(P_PIDFD), 5.4; PIDFD_GET_INFO 6.13 with PIDFD_INFO_EXIT 6.15). */
#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "pidfd.h"
#include "proc.h"

static void decode_wstatus(int wstatus, struct orrery_exit *out) {
  if (WIFSIGNALED(wstatus)) {
    out->code = -1;
    out->signal = WTERMSIG(wstatus);
  } else {
    out->code = WEXITSTATUS(wstatus);
    out->signal = 0;
  }
}

/* The pid behind a pidfd from /proc/self/fdinfo (Linux 5.3; "Pid: -1" once reaped, 5.14+). */
static pid_t pidfd_pid(int pidfd) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
  if (orrery_read_small_file(path, buf, sizeof buf) <= 0) return -1;
  const char *p = strstr(buf, "\nPid:");
  return p ? (pid_t)strtol(p + 5, NULL, 10) : -1;
}

/* Exited, not reaped yet by its parent: the zombie still shows its wait status in
 * /proc/<pid>/stat field 52 (exit_code, Linux 3.5; proc(5)). While it is a zombie the pid cannot
 * be reused, and we check the pidfd still names it after reading, so the status is its own. This
 * saves waiting for a slow reaper (the host's init may reap orphans only every second or so). */
static int zombie_wstatus(int pidfd, int *wstatus) {
  pid_t pid = pidfd_pid(pidfd);
  if (pid <= 0) return -1;
  char buf[2048];
  if (orrery_read_proc_stat(pid, buf, sizeof buf) <= 0) return -1;
  const char *state = orrery_stat_field(buf, 3); /* 'Z' for a zombie */
  if (!state || *state != 'Z') return -1;
  const char *exit_code = orrery_stat_field(buf, 52);
  if (!exit_code) return -1;
  int status = (int)strtol(exit_code, NULL, 10);
  if (pidfd_pid(pidfd) != pid) return -1; /* reaped meanwhile: the stat line may be another's */
  *wstatus = status;
  return 0;
}

/* A pidfd we did not get from clone (re-adoption after a runtime restart) names a process whose
 * parent is someone else, so waitid says ECHILD. Since 6.15 pidfs keeps the wait status once the
 * task is reaped by its parent and returns it through PIDFD_GET_INFO with PIDFD_INFO_EXIT. */
static enum orrery_exit_source exit_from_pidfd_info(int pidfd, struct orrery_exit *out, int *err) {
  struct orrery_pidfd_info info;
  memset(&info, 0, sizeof info);
  info.mask = ORRERY_PIDFD_INFO_EXIT;
  if (ioctl(pidfd, ORRERY_PIDFD_GET_INFO, &info) < 0) {
    *err = errno;
    /* ENOTTY/EINVAL: no PIDFD_GET_INFO (< 6.13); ESRCH: reaped, and the kernel keeps no exit
     * info (< 6.15). Either way a zombie that is not reaped yet still has its stat line. */
    int wstatus;
    if (zombie_wstatus(pidfd, &wstatus) == 0) {
      decode_wstatus(wstatus, out);
      return EXIT_ZOMBIE_STAT;
    }
    return *err == ESRCH ? EXIT_UNKNOWN : EXIT_PENDING_REAP;
  }
  if (!(info.mask & ORRERY_PIDFD_INFO_EXIT)) {
    int wstatus;
    if (zombie_wstatus(pidfd, &wstatus) == 0) {
      decode_wstatus(wstatus, out);
      return EXIT_ZOMBIE_STAT;
    }
    return EXIT_PENDING_REAP;
  }
  decode_wstatus(info.exit_code, out);
  return EXIT_PIDFD_INFO;
}

enum orrery_exit_source orrery_pidfd_exit(int pidfd, struct orrery_exit *out, int *err) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  *err = 0;
  if (waitid((idtype_t)ORRERY_P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) < 0) {
    if (errno == EINTR) return EXIT_NOT_YET;
    if (errno == ECHILD) return exit_from_pidfd_info(pidfd, out, err);
    *err = errno;
    return EXIT_UNKNOWN;
  }
  /* WNOHANG and nothing to reap: si_pid stays 0 (waitid(2)). */
  if (info.si_pid == 0) return EXIT_NOT_YET;
  if (info.si_code == CLD_EXITED) {
    out->code = info.si_status;
    out->signal = 0;
  } else {
    out->code = -1;
    out->signal = info.si_status;
  }
  return EXIT_WAITID;
}

int orrery_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int orrery_pidfd_send_signal(int pidfd, int sig) {
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0) {
    if (errno == ESRCH) return 0; /* already exited: the exit watch reports it */
    return -1;
  }
  return 0;
}

int orrery_pidfd_alive(int pidfd) {
  return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 ? -1 : 0;
}
