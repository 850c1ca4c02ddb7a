/* orrery-init runs without a C library: raw system calls, its own _start, a few string helpers.
 *
 * Why: glibc's startup, static or dynamic, runs init_cpu_features and the cache-info probes
 * (sysdeps/x86/cacheinfo.h, handle_amd / handle_intel), some ninety CPUID instructions. In a
 * virtual machine every CPUID is a VM exit, which makes that start-up cost several times what
 * init does itself. orrery-init starts on every spawn beside the workload, and on a small host
 * that CPU time delays the runtime and the workload's own exec (README.md, "Where the time goes",
 * has the numbers). Everything init needs is a dozen system calls, so it makes them itself.
 *
 * Only the constants come from the C library's headers (sys/syscall.h, signal.h, sys/wait.h);
 * no function of it is linked (-nostdlib). x86_64 and aarch64, like the clone3 trampoline. */
#ifndef ORRERY_INIT_SYS_H
#define ORRERY_INIT_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
static inline long sys6(long n, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
/* The kernel enters with argc at (%rsp), argv and envp above it (System V x86_64 ABI, 3.4.1). */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call init_start\n"
        "  hlt\n");
#elif defined(__aarch64__)
static inline long sys6(long n, long a, long b, long c, long d, long e, long f) {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  register long x4 __asm__("x4") = e;
  register long x5 __asm__("x5") = f;
  __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
}
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  bl init_start\n");
#else
#error "orrery-init: raw system calls are written for x86_64 and aarch64 only"
#endif

/* Kernel return convention: -4095..-1 is -errno. */
static inline long sys_ret(long r, int *err) {
  if (r < 0 && r > -4096) {
    *err = (int)-r;
    return -1;
  }
  return r;
}

#define SYS(n, a, b, c, d, e, f) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* The kernel's sigset_t for rt_sig*: 64 bits on both architectures. */
typedef uint64_t ksigset_t;
#define KSIGSET_SIZE sizeof(ksigset_t)
/* The kernel's struct sigaction (without sa_restorer's need: only SIG_DFL is ever set). */
struct ksigaction {
  void *handler;
  unsigned long flags;
  void *restorer;
  ksigset_t mask;
};

/* GCC may turn a zeroing loop or a struct initialiser into calls to these; they must exist. */
void *memset(void *s, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

static inline size_t str_len(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static inline int str_eq(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* Decimal digits of v into buf (no NUL); returns the length. */
static inline int fmt_uint(char *buf, unsigned long v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  return n;
}

#endif
