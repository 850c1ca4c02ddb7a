/* Closing the fds the parent side opens (spawn.c, netns.c, the js_*.c files): each is -1 until
 * opened, and close(2) releases the fd even when it fails (on Linux also on EINTR), so it is
 * never retried and its result is not looked at. The clone child closes nothing: it marks fds
 * close-on-exec (child.c). */
#ifndef ORRERY_FD_H
#define ORRERY_FD_H

#include <unistd.h>

static inline void orrery_close_fd(int fd) {
  if (fd >= 0) close(fd);
}

static inline void orrery_close_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++) orrery_close_fd(fds[i]);
}

#endif
