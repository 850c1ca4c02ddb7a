/* Reading small /proc files: /proc/self/fdinfo/<fd> (pidfd.c) and /proc/<pid>/stat (spawn.c's
 * start time, pidfd.c's zombie exit code). */
#ifndef ORRERY_PROC_H
#define ORRERY_PROC_H

#include <sys/types.h>

/* Up to size - 1 bytes of path, NUL-terminated; the byte count, or -1 + errno. */
ssize_t orrery_read_small_file(const char *path, char *buf, size_t size);

/* orrery_read_small_file of /proc/<pid>/stat. */
ssize_t orrery_read_proc_stat(pid_t pid, char *buf, size_t size);

/* The start of field `field` (numbered as in proc(5), 3 or more) of a stat line, or NULL if the
 * line is shorter. comm (field 2) may hold spaces and parentheses, so fields are counted from
 * the last ')'. */
const char *orrery_stat_field(const char *stat, int field);

#endif
