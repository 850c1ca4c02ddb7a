/* Raw baseline for bench/spawn.bench.ts: clone3 with exactly the flags Orrery uses for an isolated
 * replica (CLONE_PIDFD, new user/pid/mount/uts/ipc namespaces, CLONE_INTO_CGROUP into the v2 test
 * cgroup, the child joining the v1 memory cgroup by writing "0" to its tasks file, as the runtime does;
 * the parent writing the user namespace's uid_map and gid_map while the child waits on a pipe,
 * then the child becoming root of it with setresgid/setresuid, as newuidmap + runc do), then execve of
 * /bin/true, timed until the parent sees the exec succeed (EOF on a CLOEXEC pipe), as the addon's
 * spawn() is. This is a small process, so the plain fork-style clone3 is as fast as it gets here.
 *
 *   clone3-exec ROUNDS V2DIR V1_JOIN_FILE HOST_ID   -> one latency in nanoseconds per line on stdout
 *
 * HOST_ID: the first host uid and gid the namespace's 65536 ids map to.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void write_map(long pid, const char *file, const char *line) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/%s", pid, file);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  if (write(fd, line, strlen(line)) != (ssize_t)strlen(line)) die(path);
  close(fd);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s ROUNDS V2DIR V1_JOIN_FILE HOST_ID\n", argv[0]);
    return 2;
  }
  char map[64];
  snprintf(map, sizeof map, "0 %s 65536\n", argv[4]);
  int rounds = atoi(argv[1]);
  int cg = open(argv[2], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) die("open v2 dir");
  char *const child_argv[] = {"true", NULL};
  char *const child_env[] = {NULL};
  for (int i = 0; i < rounds; i++) {
    uint64_t start = now_ns();
    int v1 = open(argv[3], O_WRONLY | O_CLOEXEC);
    if (v1 < 0) die("open v1 join file");
    int pipefd[2], sync[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0 || pipe2(sync, O_CLOEXEC) < 0) die("pipe2");
    int pidfd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC |
                 CLONE_INTO_CGROUP;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)cg;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) die("clone3");
    if (pid == 0) {
      char ok;
      close(sync[1]);
      if (read(sync[0], &ok, 1) != 1 || syscall(SYS_setresgid, 0, 0, 0) < 0 ||
          syscall(SYS_setresuid, 0, 0, 0) < 0) {
        int e = errno;
        (void)!write(pipefd[1], &e, sizeof e);
        _exit(127);
      }
      if (write(v1, "0", 1) != 1) {
        int e = errno;
        (void)!write(pipefd[1], &e, sizeof e);
        _exit(127);
      }
      execve("/bin/true", child_argv, child_env);
      int e = errno;
      (void)!write(pipefd[1], &e, sizeof e);
      _exit(127);
    }
    write_map(pid, "uid_map", map);
    write_map(pid, "gid_map", map);
    if (write(sync[1], "1", 1) != 1) die("sync");
    close(sync[0]);
    close(sync[1]);
    close(pipefd[1]);
    close(v1);
    int err = 0;
    ssize_t n = read(pipefd[0], &err, sizeof err);
    uint64_t end = now_ns();
    close(pipefd[0]);
    if (n != 0) {
      fprintf(stderr, "child failed: %s\n", strerror(err));
      return 1;
    }
    siginfo_t info;
    if (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED) < 0) die("waitid");
    close(pidfd);
    printf("%llu\n", (unsigned long long)(end - start));
  }
  return 0;
}
