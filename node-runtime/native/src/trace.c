/* See trace.h. */
#include "syscalls.h"

#include <string.h>
#include <time.h>

#include "trace.h"

int orrery_trace_on = 0;
uint64_t orrery_trace_ns[TR__COUNT];
int orrery_trace_cpu[TR__COUNT];

static const char *const names[TR__COUNT] = {
    [TR_ENTER] = "enter",
    [TR_STATUS_FILE] = "status-file",
    [TR_PREPARED] = "prepared",
    [TR_CLONE] = "clone",
    [TR_HELPER] = "helper",
    [TR_HELPER_MOUNTS] = "helper-mounts",
    [TR_CHILD] = "child",
    [TR_SIGNALS] = "signals",
    [TR_VOLUME_TREES] = "volume-trees",
    [TR_USERNS] = "userns",
    [TR_SETSID] = "setsid",
    [TR_CGROUPS] = "cgroups",
    [TR_HOSTNAME] = "hostname",
    [TR_MOUNT_PRIVATE] = "mount-private",
    [TR_MOUNT_PROC] = "mount-proc",
    [TR_STDIO] = "stdio",
    [TR_IDENTITY] = "identity",
    [TR_CLOSE_FDS] = "close-fds",
    [TR_WORKLOAD_CLONE] = "workload-clone",
    [TR_EXEC] = "exec",
    [TR_WORKLOAD_EXEC] = "workload-exec",
    [TR_CLONE_RETURNED] = "clone-returned",
    [TR_EOF] = "eof",
    [TR_DONE] = "done",
};

void orrery_trace_stamp(enum orrery_trace_point point) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  unsigned cpu = 0;
  (void)syscall(SYS_getcpu, &cpu, NULL, NULL);
  orrery_trace_ns[point] = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  orrery_trace_cpu[point] = (int)cpu;
}

void orrery_trace_reset(void) {
  memset(orrery_trace_ns, 0, sizeof orrery_trace_ns);
  memset(orrery_trace_cpu, 0, sizeof orrery_trace_cpu);
}

const char *orrery_trace_name(enum orrery_trace_point point) {
  return point < TR__COUNT ? names[point] : "?";
}
