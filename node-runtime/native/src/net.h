#ifndef ORRERY_NET_H
#define ORRERY_NET_H
/* Bring up lo in a fresh network namespace. Returns 0 or an errno. Async-signal-safe. */
int orrery_loopback_up(void);
#endif
