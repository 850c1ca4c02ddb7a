/* What this kernel offers, probed without side effects where a probe is safe and by version
 * where a probe would have to create a process or a cgroup. */
#include "syscalls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include "kernel_features.h"
#include "spawn.h"

static int at_least(const struct orrery_features *f, int major, int minor) {
  return f->kernel_major > major || (f->kernel_major == major && f->kernel_minor >= minor);
}

void orrery_kernel_features(struct orrery_features *f) {
  memset(f, 0, sizeof *f);
  struct utsname u;
  if (uname(&u) == 0) sscanf(u.release, "%d.%d", &f->kernel_major, &f->kernel_minor);

  /* clone3(NULL, 0) is EINVAL where clone3 exists and ENOSYS/EPERM where it does not or a seccomp
   * filter hides it; it never creates a process. */
  errno = 0;
  long r = syscall(SYS_clone3, NULL, 0);
  f->clone3 = r < 0 && errno == EINVAL && !orrery_clone3_unavailable;
  /* A CLONE_INTO_CGROUP probe would fork; go by version (5.7) and by what clone.c has seen. */
  f->clone_into_cgroup = f->clone3 && at_least(f, 5, 7) && !orrery_into_cgroup_unavailable;
  /* PIDFD_GET_INFO exists from 6.13 (probe on our own pidfd); PIDFD_INFO_EXIT from 6.15. */
  int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (self >= 0) {
    struct orrery_pidfd_info info;
    memset(&info, 0, sizeof info);
    info.mask = ORRERY_PIDFD_INFO_PID;
    f->pidfd_info_exit = ioctl(self, ORRERY_PIDFD_GET_INFO, &info) == 0 && at_least(f, 6, 15);
    close(self);
  }
  f->cgroup_kill = at_least(f, 5, 14); /* cgroup.kill, cgroup v2 only */
}
