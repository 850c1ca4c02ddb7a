/* Raw syscall numbers, flags and structs that glibc 2.36 / the installed uapi headers do not
 * (all) provide. Every definition says which kernel introduced it, because the fallbacks in
 * clone.c and pidfd.c are keyed on exactly those versions. */
#ifndef ORRERY_SYSCALLS_H
#define ORRERY_SYSCALLS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <linux/types.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435 /* Linux 5.3 */
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* Linux 5.3 */
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424 /* Linux 5.1 */
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428 /* Linux 5.2 */
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429 /* Linux 5.2 */
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442 /* Linux 5.12 */
#endif
#ifndef SYS_openat2
#define SYS_openat2 437 /* Linux 5.6 */
#endif
/* openat2(2)'s struct open_how and RESOLVE_* flags, under names of our own (linux/openat2.h is
 * missing from older headers). */
struct orrery_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};
#define ORRERY_RESOLVE_NO_MAGICLINKS 0x02
#define ORRERY_RESOLVE_NO_SYMLINKS 0x04
#define ORRERY_RESOLVE_IN_ROOT 0x10
#ifndef SYS_close_range
#define SYS_close_range 436 /* Linux 5.9 */
#endif

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000 /* Linux 5.2 (clone), 5.3 (clone3) */
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL /* Linux 5.7, clone3 only */
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2) /* Linux 5.11 */
#endif
/* waitid(P_PIDFD): Linux 5.4. glibc 2.36 has it only as an idtype_t enumerator. */
#define ORRERY_P_PIDFD 3

/* clone3(2): struct clone_args. VER0 (64 bytes) is 5.3; set_tid (VER1) is 5.5; cgroup (VER2,
 * 88 bytes) is 5.7. We always pass VER2 when CLONE_INTO_CGROUP is wanted and VER0 otherwise, so
 * a 5.3..5.6 kernel does not reject the larger struct with E2BIG. */
struct orrery_clone_args {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t child_tid;
  uint64_t parent_tid;
  uint64_t exit_signal;
  uint64_t stack;
  uint64_t stack_size;
  uint64_t tls;
  uint64_t set_tid;
  uint64_t set_tid_size;
  uint64_t cgroup;
};
#define ORRERY_CLONE_ARGS_SIZE_VER0 64
#define ORRERY_CLONE_ARGS_SIZE_VER2 88

/* pidfs ioctl PIDFD_GET_INFO (Linux 6.13); PIDFD_INFO_EXIT (Linux 6.15) keeps the wait status
 * of an exited task readable through any pidfd, even by a process that is not its parent. */
struct orrery_pidfd_info {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid;
  uint32_t tgid;
  uint32_t ppid;
  uint32_t ruid;
  uint32_t rgid;
  uint32_t euid;
  uint32_t egid;
  uint32_t suid;
  uint32_t sgid;
  uint32_t fsuid;
  uint32_t fsgid;
  int32_t exit_code;
};
#define ORRERY_PIDFS_IOCTL_MAGIC 0xFF
#define ORRERY_PIDFD_GET_INFO _IOWR(ORRERY_PIDFS_IOCTL_MAGIC, 11, struct orrery_pidfd_info)
#define ORRERY_PIDFD_INFO_PID (1ULL << 0)
#define ORRERY_PIDFD_INFO_EXIT (1ULL << 3)

#endif
