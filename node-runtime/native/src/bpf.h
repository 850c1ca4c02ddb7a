/* The bpf(2) calls of the kernel fast path (node-runtime/bpf/): pinned objects, map elements,
 * cgroup attachments and program info, as raw system calls, so the addon needs no libbpf. The
 * programs are loaded and pinned by orrery-bpf-load (node-runtime/bpf/loader.c). Each returns
 * >= 0 (an fd, a count, 0) or -errno. */
#ifndef ORRERY_BPF_H
#define ORRERY_BPF_H

#include <stdint.h>

struct orrery_bpf_prog_info {
  uint32_t id;
  char name[16]; /* the kernel keeps 15 characters of it */
  uint64_t run_time_ns; /* only counted while bpf stats are enabled (orrery_bpf_enable_stats) */
  uint64_t run_cnt;
};

struct orrery_bpf_map_info {
  uint32_t id, type, key_size, value_size, max_entries;
};

int orrery_bpf_obj_get(const char *path);
int orrery_bpf_map_update(int map_fd, const void *key, const void *value);
int orrery_bpf_map_delete(int map_fd, const void *key);
int orrery_bpf_map_lookup(int map_fd, const void *key, void *value);
/* The key after `key` (the first with key NULL) into next_key; -ENOENT after the last. */
int orrery_bpf_map_next_key(int map_fd, const void *key, void *next_key);
/* Cgroup attachments with BPF_F_ALLOW_MULTI: they last until detached or the cgroup is removed,
 * whoever holds an fd. attach_type is a name: connect4, getpeername4, connect6, getpeername6,
 * bind4, bind6; -EINVAL for another. */
int orrery_bpf_attach_type(const char *name);
int orrery_bpf_prog_attach(const char *cgroup_dir, int prog_fd, int attach_type);
int orrery_bpf_prog_detach(const char *cgroup_dir, int prog_fd, int attach_type);
/* Ids of the programs attached to the cgroup itself (not inherited) for that type; at most max. */
int orrery_bpf_prog_query(const char *cgroup_dir, int attach_type, uint32_t *ids, uint32_t max);
int orrery_bpf_prog_info(int prog_fd, struct orrery_bpf_prog_info *out);
int orrery_bpf_map_info(int map_fd, struct orrery_bpf_map_info *out);
/* An fd for the program with that id, -ENOENT once the kernel has freed it. */
int orrery_bpf_prog_get_fd_by_id(uint32_t id);
/* BPF_ENABLE_STATS (Linux 5.8): run_time_ns and run_cnt are counted while the fd is open. */
int orrery_bpf_enable_stats(void);

#endif
