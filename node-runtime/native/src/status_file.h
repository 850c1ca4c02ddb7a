/* The exit status file, empty before each start (README.md, "orrery-init and its protocol"), so a
 * stale record from a previous run can never be mistaken for this one. Used by the parent
 * (spawn.c) and by the clone child (child.c), so raw syscalls only: async-signal-safe.
 *
 * The cheapest way to an empty file depends on the filesystem: on ext4 a truncate of a file with
 * data flushes it on close (auto_da_alloc, ~0.4 ms), so unlink + O_EXCL create there (~70 µs); on
 * tmpfs, where the runtime keeps its run dir (docs/DESIGN.md §12), the unlink and create cost ~45
 * µs and a truncate ~8. So: open it as it is (O_NOFOLLOW: never through a link); a new or empty
 * file is ready (the previous run was SIGKILLed, or there was none); a tmpfs one is truncated;
 * any other is replaced by a fresh one. Returns the fd (O_CLOEXEC as asked) or -1 with errno. */
#ifndef ORRERY_STATUS_FILE_H
#define ORRERY_STATUS_FILE_H

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define ORRERY_TMPFS_MAGIC 0x01021994

static inline int orrery_fresh_status_file(const char *path, int cloexec) {
  int flags = O_WRONLY | O_NOFOLLOW | (cloexec ? O_CLOEXEC : 0);
  int fd = open(path, flags | O_CREAT, 0640);
  if (fd < 0) return -1;
  struct stat st;
  struct statfs fs;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    if (st.st_size == 0) return fd;
    if (fstatfs(fd, &fs) == 0 && fs.f_type == ORRERY_TMPFS_MAGIC && ftruncate(fd, 0) == 0) return fd;
  }
  close(fd);
  if (unlink(path) < 0 && errno != ENOENT) return -1;
  return open(path, flags | O_CREAT | O_EXCL, 0640);
}

#endif
