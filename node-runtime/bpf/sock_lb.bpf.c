// SPDX-License-Identifier: GPL-2.0
/* Connect-time load balancing for the replicas under the host's Orrery cgroup (README.md).
 *
 * cgroup/connect4 runs in connect(2) before routing: a TCP connect to a VIP:port that has an
 * entry in `orrery_svc` is sent to one of its endpoints, chosen by weighted random, and the
 * socket's cookie remembers the VIP. cgroup/getpeername4 gives the VIP back to getpeername(2), so
 * the client sees the address it asked for. connect6/getpeername6 do the same for an IPv6 socket
 * given the VIP v4-mapped (::ffff:a.b.c.d). A VIP:port without an entry (an http port, whose L7
 * policy the local proxy applies at that address, or a Service unknown here) is left alone.
 *
 * Every entry is written whole by the runtime (one BPF_MAP_UPDATE_ELEM), so a connect sees either
 * the old endpoint list or the new one, never a mix. GPL: bpf_get_socket_cookie needs no GPL, but
 * keeping the license open costs nothing and lets later helpers in. */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ORRERY_MAX_ENDPOINTS 128

struct svc_key {
  __u32 vip;   /* network order, as in bpf_sock_addr.user_ip4 */
  __u16 port;  /* network order */
  __u16 pad;
};

struct endpoint {
  __u32 addr;       /* network order */
  __u16 port;       /* network order */
  __u16 pad;
  __u32 cum_weight; /* sum of the weights up to and including this endpoint */
};

struct svc_value {
  __u32 count;        /* endpoints in use, at most ORRERY_MAX_ENDPOINTS */
  __u32 total_weight; /* cum_weight of the last one; 0: no endpoint, connect is refused */
  struct endpoint ep[ORRERY_MAX_ENDPOINTS];
};

/* What getpeername must answer for a rewritten socket. */
struct revnat {
  __u32 vip;
  __u16 vport;
  __u16 pad;
  __u32 addr; /* the endpoint chosen, so a socket connected elsewhere later is not rewritten */
  __u16 port;
  __u16 pad2;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct svc_key);
  __type(value, struct svc_value);
} orrery_svc SEC(".maps");

/* Keyed by socket cookie; LRU, because nothing tells us when a socket closes. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 262144);
  __type(key, __u64);
  __type(value, struct revnat);
} orrery_revnat SEC(".maps");

/* A port the runtime allocated to a replica (network order, in a 32-bit key) -> the id of that
 * replica's cgroup v2 directory (its inode number). Only processes of that cgroup may bind it. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32);
  __type(value, __u64);
} orrery_ports SEC(".maps");

/* Per-CPU counters, read by tests and the runtime: [0] rewritten, [1] refused (no endpoint),
 * [2] binds refused (another replica's port). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 3);
  __type(key, __u32);
  __type(value, __u64);
} orrery_counters SEC(".maps");

static __always_inline void count(__u32 which) {
  __u64 *n = bpf_map_lookup_elem(&orrery_counters, &which);
  if (n) *n += 1;
}

/* The endpoint for a connect to vip:port (network order), recorded for getpeername; NULL when
 * the connect is left alone. *refuse is set when the entry has no endpoint. */
static __always_inline const struct endpoint *pick(struct bpf_sock_addr *ctx, __u32 vip, __u16 port, int *refuse) {
  struct svc_key key = {.vip = vip, .port = port};
  struct svc_value *svc = bpf_map_lookup_elem(&orrery_svc, &key);
  if (!svc) return 0;
  __u32 total = svc->total_weight;
  if (total == 0) {
    *refuse = 1;
    return 0;
  }
  __u32 r = bpf_get_prandom_u32() % total;
  __u32 n = svc->count;
  const struct endpoint *chosen = 0;
  for (__u32 i = 0; i < ORRERY_MAX_ENDPOINTS; i++) {
    if (i >= n) break;
    if (r < svc->ep[i].cum_weight) {
      chosen = &svc->ep[i];
      break;
    }
  }
  if (!chosen) return 0; /* an entry written wrong (cum_weight short of total): leave it */
  struct revnat rev = {.vip = vip, .vport = port, .addr = chosen->addr, .port = chosen->port};
  __u64 cookie = bpf_get_socket_cookie(ctx);
  bpf_map_update_elem(&orrery_revnat, &cookie, &rev, BPF_ANY);
  count(0);
  return chosen;
}

/* No endpoint: connect(2) fails at once with ECONNREFUSED, as against a closed port (the proxy
 * resets such a client). bpf_set_retval: Linux 5.18; without it the error is EPERM. */
static __always_inline int refuse(void) {
  count(1);
  bpf_set_retval(-ECONNREFUSED);
  return 0;
}

SEC("cgroup/connect4")
int orrery_connect4(struct bpf_sock_addr *ctx) {
  if (ctx->protocol != IPPROTO_TCP) return 1; /* UDP is not balanced here: untouched */
  int no_endpoint = 0;
  const struct endpoint *ep = pick(ctx, ctx->user_ip4, (__u16)ctx->user_port, &no_endpoint);
  if (no_endpoint) return refuse();
  if (!ep) return 1;
  ctx->user_ip4 = ep->addr;
  ctx->user_port = ep->port;
  return 1;
}

static __always_inline struct revnat *reverse(struct bpf_sock_addr *ctx, __u32 peer, __u16 port) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct revnat *rev = bpf_map_lookup_elem(&orrery_revnat, &cookie);
  if (!rev || rev->addr != peer || rev->port != port) return 0;
  return rev;
}

SEC("cgroup/getpeername4")
int orrery_getpeername4(struct bpf_sock_addr *ctx) {
  struct revnat *rev = reverse(ctx, ctx->user_ip4, (__u16)ctx->user_port);
  if (!rev) return 1;
  ctx->user_ip4 = rev->vip;
  ctx->user_port = rev->vport;
  return 1;
}

/* An IPv6 socket reaching an IPv4 VIP through a v4-mapped address (::ffff:a.b.c.d), as Java's
 * dual-stack sockets do: the same service map, the address kept v4-mapped. Virtual IPs are IPv4
 * only, so nothing else is looked up. */
#define V4_MAPPED_PREFIX 0x0000ffff /* the third 32-bit word of ::ffff:0:0/96, network order */

static __always_inline int v4_mapped(struct bpf_sock_addr *ctx) {
  return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == bpf_htonl(V4_MAPPED_PREFIX);
}

SEC("cgroup/connect6")
int orrery_connect6(struct bpf_sock_addr *ctx) {
  if (ctx->protocol != IPPROTO_TCP || !v4_mapped(ctx)) return 1;
  int no_endpoint = 0;
  const struct endpoint *ep = pick(ctx, ctx->user_ip6[3], (__u16)ctx->user_port, &no_endpoint);
  if (no_endpoint) return refuse();
  if (!ep) return 1;
  ctx->user_ip6[3] = ep->addr;
  ctx->user_port = ep->port;
  return 1;
}

SEC("cgroup/getpeername6")
int orrery_getpeername6(struct bpf_sock_addr *ctx) {
  if (!v4_mapped(ctx)) return 1;
  struct revnat *rev = reverse(ctx, ctx->user_ip6[3], (__u16)ctx->user_port);
  if (!rev) return 1;
  ctx->user_ip6[3] = rev->vip;
  ctx->user_port = rev->vport;
  return 1;
}

/* bind(2) of a port allocated to a replica, by a process of another cgroup below the host's
 * Orrery parent (another replica): refused with EPERM, before the kernel looks at the port. The
 * owner's binds, ephemeral ports (0) and ports no replica was given pass. Both protocols: the
 * port is the replica's. Processes outside Orrery's cgroup are not seen here. */
static __always_inline int guard_port(struct bpf_sock_addr *ctx) {
  __u32 port = ctx->user_port;
  if (port == 0) return 1;
  __u64 *owner = bpf_map_lookup_elem(&orrery_ports, &port);
  if (!owner || *owner == bpf_get_current_cgroup_id()) return 1;
  count(2);
  return 0;
}

SEC("cgroup/bind4")
int orrery_bind4(struct bpf_sock_addr *ctx) { return guard_port(ctx); }

SEC("cgroup/bind6")
int orrery_bind6(struct bpf_sock_addr *ctx) { return guard_port(ctx); }

char LICENSE[] SEC("license") = "GPL";
