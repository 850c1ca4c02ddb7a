/* A new network namespace (CLONE_NEWNET) holds only lo, and lo starts down (network_namespaces(7)).
 * `ip link set lo up` is SIOCSIFFLAGS on any AF_INET socket inside the namespace (netdevice(7)). */
#include "syscalls.h"

#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>

#include "net.h"

int orrery_loopback_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, "lo", 3);
  int err = 0;
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
    err = errno;
  } else {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) err = errno;
  }
  close(fd);
  return err;
}
