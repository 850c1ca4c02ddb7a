/* orrery-bpf-load OBJECT PINDIR: loads the BPF object (sock_lb.bpf.o) with libbpf and pins each of
 * its programs and maps as PINDIR/<name>, so they outlive this process; attaching, map updates,
 * detaching and unpinning are the addon's raw bpf(2) calls (node-runtime/bpf/index.ts). A loader
 * rather than libbpf inside the addon: Debian's libbpf.a is not position-independent, and the
 * addon should not need libbpf.so to load when the fast path is off.
 *
 * bpffs is mounted at /sys/fs/bpf first when PINDIR is under it and nothing is mounted there
 * (what systemd does at boot; a container or a minimal host may not have it). On any failure the
 * pins made so far are removed, and the exit code is 1 with one line on stderr naming the step. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <linux/magic.h>

#define BPFFS "/sys/fs/bpf"

static int print_warnings(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  return vfprintf(stderr, fmt, args); /* the verifier's log on a load failure */
}

static int fail(const char *step, const char *what, int err) {
  fprintf(stderr, "orrery-bpf-load: %s %s: %s\n", step, what, strerror(err));
  return 1;
}

static int on_bpffs(const char *path) {
  struct statfs st;
  return statfs(path, &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

static int ensure_bpffs(const char *pindir) {
  if (strncmp(pindir, BPFFS "/", sizeof BPFFS) != 0) return 0; /* elsewhere: the caller's bpffs */
  if (on_bpffs(BPFFS)) return 0;
  if (mount("bpf", BPFFS, "bpf", 0, "mode=0700") != 0) return -errno;
  return 0;
}

/* mkdir -p of PINDIR's parents (/sys/fs/bpf/orrery for /sys/fs/bpf/orrery/<host>). */
static int mkdir_parents(const char *pindir) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s", pindir) >= (int)sizeof path) return -ENAMETOOLONG;
  char *last = strrchr(path, '/');
  for (char *p = path + 1; last && p <= last; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST) return -errno;
    *p = '/';
  }
  return 0;
}

static void unpin_all(struct bpf_object *obj, const char *pindir) {
  char path[PATH_MAX];
  struct bpf_program *prog;
  struct bpf_map *map;
  bpf_object__for_each_program(prog, obj) {
    snprintf(path, sizeof path, "%s/%s", pindir, bpf_program__name(prog));
    unlink(path);
  }
  bpf_object__for_each_map(map, obj) {
    snprintf(path, sizeof path, "%s/%s", pindir, bpf_map__name(map));
    unlink(path);
  }
  rmdir(pindir);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: orrery-bpf-load OBJECT PINDIR\n");
    return 2;
  }
  const char *file = argv[1], *pindir = argv[2];
  char path[PATH_MAX];
  int err;

  libbpf_set_print(print_warnings);
  if ((err = ensure_bpffs(pindir)) < 0) return fail("mount", BPFFS, -err);
  if (!on_bpffs(BPFFS) && strncmp(pindir, BPFFS "/", sizeof BPFFS) == 0) return fail("mount", BPFFS, EINVAL);
  if ((err = mkdir_parents(pindir)) < 0) return fail("mkdir", pindir, -err);
  if (mkdir(pindir, 0700) != 0) return fail("mkdir", pindir, errno); /* EEXIST: pinned already */

  struct bpf_object *obj = bpf_object__open_file(file, NULL);
  if (!obj) {
    rmdir(pindir);
    return fail("open", file, errno);
  }
  if ((err = bpf_object__load(obj)) != 0) {
    rmdir(pindir);
    bpf_object__close(obj);
    return fail("load", file, -err);
  }
  struct bpf_map *map;
  bpf_object__for_each_map(map, obj) {
    snprintf(path, sizeof path, "%s/%s", pindir, bpf_map__name(map));
    if ((err = bpf_map__pin(map, path)) != 0) goto pin_failed;
  }
  struct bpf_program *prog;
  bpf_object__for_each_program(prog, obj) {
    snprintf(path, sizeof path, "%s/%s", pindir, bpf_program__name(prog));
    if ((err = bpf_program__pin(prog, path)) != 0) goto pin_failed;
  }
  bpf_object__close(obj); /* the pins hold them now */
  return 0;

pin_failed:
  unpin_all(obj, pindir);
  bpf_object__close(obj);
  return fail("pin", path, -err);
}
