/* See bpf.h. bpf(2): https://man7.org/linux/man-pages/man2/bpf.2.html; the attr layouts are
 * linux/bpf.h's, zeroed whole as the kernel requires of every byte past the command's fields. */
#include "bpf.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_bpf(int cmd, union bpf_attr *attr) {
  long rc = syscall(SYS_bpf, cmd, attr, sizeof *attr);
  return rc < 0 ? -errno : (int)rc;
}

static uint64_t ptr(const void *p) { return (uint64_t)(uintptr_t)p; }

int orrery_bpf_obj_get(const char *path) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.pathname = ptr(path);
  attr.file_flags = 0;
  return sys_bpf(BPF_OBJ_GET, &attr);
}

static int map_elem(int cmd, int map_fd, const void *key, void *value, uint64_t flags) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = (uint32_t)map_fd;
  attr.key = ptr(key);
  attr.value = ptr(value);
  attr.flags = flags;
  return sys_bpf(cmd, &attr);
}

int orrery_bpf_map_update(int map_fd, const void *key, const void *value) {
  return map_elem(BPF_MAP_UPDATE_ELEM, map_fd, key, (void *)value, BPF_ANY);
}

int orrery_bpf_map_delete(int map_fd, const void *key) { return map_elem(BPF_MAP_DELETE_ELEM, map_fd, key, NULL, 0); }

int orrery_bpf_map_lookup(int map_fd, const void *key, void *value) {
  return map_elem(BPF_MAP_LOOKUP_ELEM, map_fd, key, value, 0);
}

int orrery_bpf_map_next_key(int map_fd, const void *key, void *next_key) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = (uint32_t)map_fd;
  attr.key = ptr(key);
  attr.next_key = ptr(next_key);
  return sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr);
}

int orrery_bpf_attach_type(const char *name) {
  static const struct {
    const char *name;
    int type;
  } types[] = {
      {"connect4", BPF_CGROUP_INET4_CONNECT},         {"connect6", BPF_CGROUP_INET6_CONNECT},
      {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME}, {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME},
      {"bind4", BPF_CGROUP_INET4_BIND},               {"bind6", BPF_CGROUP_INET6_BIND},
  };
  for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
    if (strcmp(types[i].name, name) == 0) return types[i].type;
  }
  return -EINVAL;
}

static int attach_cmd(int cmd, const char *cgroup_dir, int prog_fd, int attach_type) {
  int cg = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) return -errno;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.target_fd = (uint32_t)cg;
  attr.attach_bpf_fd = (uint32_t)prog_fd;
  attr.attach_type = (uint32_t)attach_type;
  /* MULTI: other programs on the same hook (another tool's, a second Orrery on the host) stay.
   * Detach takes no flags: since Linux 6.6 it refuses any for a cgroup hook (EINVAL). */
  if (cmd == BPF_PROG_ATTACH) attr.attach_flags = BPF_F_ALLOW_MULTI;
  int rc = sys_bpf(cmd, &attr);
  close(cg);
  return rc;
}

int orrery_bpf_prog_attach(const char *cgroup_dir, int prog_fd, int attach_type) {
  return attach_cmd(BPF_PROG_ATTACH, cgroup_dir, prog_fd, attach_type);
}

int orrery_bpf_prog_detach(const char *cgroup_dir, int prog_fd, int attach_type) {
  return attach_cmd(BPF_PROG_DETACH, cgroup_dir, prog_fd, attach_type);
}

int orrery_bpf_prog_query(const char *cgroup_dir, int attach_type, uint32_t *ids, uint32_t max) {
  int cg = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) return -errno;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.query.target_fd = (uint32_t)cg;
  attr.query.attach_type = (uint32_t)attach_type;
  attr.query.prog_ids = ptr(ids);
  attr.query.prog_cnt = max;
  int rc = sys_bpf(BPF_PROG_QUERY, &attr);
  close(cg);
  if (rc < 0) return rc;
  return attr.query.prog_cnt < max ? (int)attr.query.prog_cnt : (int)max;
}

static int obj_info(int fd, void *info, uint32_t len) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.info.bpf_fd = (uint32_t)fd;
  attr.info.info_len = len;
  attr.info.info = ptr(info);
  return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
}

int orrery_bpf_prog_info(int prog_fd, struct orrery_bpf_prog_info *out) {
  struct bpf_prog_info info;
  memset(&info, 0, sizeof info);
  int rc = obj_info(prog_fd, &info, sizeof info);
  if (rc < 0) return rc;
  out->id = info.id;
  memcpy(out->name, info.name, sizeof out->name);
  out->name[sizeof out->name - 1] = '\0';
  out->run_time_ns = info.run_time_ns;
  out->run_cnt = info.run_cnt;
  return 0;
}

int orrery_bpf_map_info(int map_fd, struct orrery_bpf_map_info *out) {
  struct bpf_map_info info;
  memset(&info, 0, sizeof info);
  int rc = obj_info(map_fd, &info, sizeof info);
  if (rc < 0) return rc;
  out->id = info.id;
  out->type = info.type;
  out->key_size = info.key_size;
  out->value_size = info.value_size;
  out->max_entries = info.max_entries;
  return 0;
}

int orrery_bpf_prog_get_fd_by_id(uint32_t id) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_id = id;
  return sys_bpf(BPF_PROG_GET_FD_BY_ID, &attr);
}

int orrery_bpf_enable_stats(void) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.enable_stats.type = BPF_STATS_RUN_TIME;
  return sys_bpf(BPF_ENABLE_STATS, &attr);
}
