/* pidfd operations: open (pidfd_open, 5.3), signal (pidfd_send_signal, 5.1), exit status
 * (waitid(P_PIDFD), 5.4; PIDFD_GET_INFO 6.13 with PIDFD_INFO_EXIT 6.15). */
#include "syscalls.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "pidfd.h"

static void decode_wstatus(int wstatus, struct orrery_exit *out) {
  if (WIFSIGNALED(wstatus)) {
    out->code = -1;
    out->signal = WTERMSIG(wstatus);
  } else {
    out->code = WEXITSTATUS(wstatus);
    out->signal = 0;
  }
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
    /* ENOTTY/EINVAL: no PIDFD_GET_INFO (< 6.13). ESRCH: exited, and either the kernel keeps no
     * exit info (< 6.15) or it is not reaped yet; the caller retries a few times for the latter. */
    return errno == ESRCH ? EXIT_PENDING_REAP : EXIT_UNKNOWN;
  }
  if (!(info.mask & ORRERY_PIDFD_INFO_EXIT)) return EXIT_PENDING_REAP;
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
