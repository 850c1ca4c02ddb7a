#ifndef ORRERY_NETNS_H
#define ORRERY_NETNS_H

#include <sys/types.h>

struct orrery_netns_connect {
  int pidfd;        /* any process of the target network namespace */
  pid_t pid;        /* the same process, for kernels without setns(pidfd) (< 5.8) */
  const char *host; /* a numeric IPv4 or IPv6 address: there is no resolver in there */
  int port;
  int timeout_ms;
};

/* Blocks the calling thread up to timeout_ms. Returns a connected, non-blocking, close-on-exec
 * TCP socket, or -1 with *step ("thread", "setns", "address", "socket", "connect") and *err. */
int orrery_netns_connect(const struct orrery_netns_connect *req, const char **step, int *err);

#endif
