#ifndef ORRERY_PIDFD_H
#define ORRERY_PIDFD_H

#include <sys/types.h>

enum orrery_exit_source {
  EXIT_NOT_YET = 0,   /* still running (spurious wakeup) */
  EXIT_WAITID,        /* our child, reaped with waitid(P_PIDFD) */
  EXIT_PIDFD_INFO,    /* not our child: PIDFD_INFO_EXIT (6.15+) */
  EXIT_ZOMBIE_STAT,   /* not our child, exited, not reaped yet: /proc/<pid>/stat exit_code */
  EXIT_PENDING_REAP,  /* not our child, exited, status not readable yet: retry */
  EXIT_UNKNOWN,       /* exited, status unavailable (kernel < 6.15, or error) */
};

struct orrery_exit {
  int code;   /* >= 0 for a normal exit, else -1 */
  int signal; /* > 0 for death by signal, else 0 */
};

/* Non-blocking: reap (or look up) the exit of the process behind pidfd. */
enum orrery_exit_source orrery_pidfd_exit(int pidfd, struct orrery_exit *out, int *err);

int orrery_pidfd_open(pid_t pid);                 /* -1 + errno */
int orrery_pidfd_send_signal(int pidfd, int sig); /* 0, or -1 + errno; ESRCH counts as success */
int orrery_pidfd_alive(int pidfd);                /* 0 while the process exists, else -1 + errno (ESRCH) */

#endif
