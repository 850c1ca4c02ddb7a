/* See proc.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"

ssize_t orrery_read_small_file(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = TEMP_FAILURE_RETRY(read(fd, buf, size - 1));
  close(fd);
  if (n >= 0) buf[n] = 0;
  return n;
}

ssize_t orrery_read_proc_stat(pid_t pid, char *buf, size_t size) {
  char path[32];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  return orrery_read_small_file(path, buf, size);
}

const char *orrery_stat_field(const char *stat, int field) {
  const char *p = strrchr(stat, ')'); /* the end of field 2 */
  /* Each step moves p to the space before the next field. */
  for (int f = 2; f < field && p; f++) p = strchr(p + 1, ' ');
  return p ? p + 1 : NULL;
}
