/* A TCP connection made inside another process's network namespace, for the probes of a replica
 * that has its own (loopback-only) network: from the host its 127.0.0.1 is not the replica's.
 *
 * setns(2) with CLONE_NEWNET moves only the calling thread, and a socket keeps the namespace it
 * was created in for its whole life. So a short-lived thread of our own joins the namespace,
 * creates and connects the socket, and exits; the connected fd is then usable from any thread
 * (Node wraps it). Never the calling thread itself: the caller is a libuv threadpool thread, which
 * also runs getaddrinfo and must stay in the host's namespace. */
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "pidfd.h"

struct connect_job {
  const struct orrery_netns_connect *req;
  int fd;
  int err;
  const char *step;
};

/* setns(pidfd, CLONE_NEWNET) needs Linux 5.8; before, /proc/<pid>/ns/net, checked afterwards
 * against the pidfd so a reused pid cannot send us into a stranger's namespace. */
static int join_netns(const struct orrery_netns_connect *req) {
  if (setns(req->pidfd, CLONE_NEWNET) == 0) return 0;
  if (errno != EINVAL) return -1;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)req->pid);
  int nsfd = open(path, O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) return -1;
  int rc = orrery_pidfd_alive(req->pidfd) < 0 ? -1 : setns(nsfd, CLONE_NEWNET);
  int err = errno;
  close(nsfd);
  errno = err;
  return rc;
}

static int remaining_ms(const struct timespec *deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long ms = (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
  return ms < 0 ? 0 : (int)ms;
}

static void *connect_main(void *arg) {
  struct connect_job *job = arg;
  const struct orrery_netns_connect *req = job->req;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += req->timeout_ms / 1000;
  deadline.tv_nsec += (long)(req->timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  job->step = "setns";
  if (join_netns(req) < 0) goto fail;

  struct sockaddr_storage addr;
  socklen_t len;
  memset(&addr, 0, sizeof addr);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
  job->step = "address";
  if (inet_pton(AF_INET, req->host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(req->port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, req->host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(req->port);
    len = sizeof *v6;
  } else {
    errno = EINVAL;
    goto fail;
  }

  job->step = "socket";
  job->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (job->fd < 0) goto fail;
  job->step = "connect";
  if (connect(job->fd, (struct sockaddr *)&addr, len) < 0) {
    if (errno != EINPROGRESS) goto fail;
    struct pollfd p = {.fd = job->fd, .events = POLLOUT};
    int n = TEMP_FAILURE_RETRY(poll(&p, 1, remaining_ms(&deadline)));
    if (n < 0) goto fail;
    if (n == 0) {
      errno = ETIMEDOUT;
      goto fail;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(job->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) goto fail;
    if (soerr) {
      errno = soerr;
      goto fail;
    }
  }
  return NULL;
fail:
  job->err = errno;
  orrery_close_fd(job->fd);
  job->fd = -1;
  return NULL;
}

int orrery_netns_connect(const struct orrery_netns_connect *req, const char **step, int *err) {
  struct connect_job job = {.req = req, .fd = -1, .err = 0, .step = "thread"};
  pthread_t thread;
  int rc = pthread_create(&thread, NULL, connect_main, &job);
  if (rc) {
    *step = "thread";
    *err = rc;
    return -1;
  }
  pthread_join(thread, NULL);
  if (job.fd < 0) {
    *step = job.step;
    *err = job.err;
    return -1;
  }
  return job.fd;
}
