#!/bin/sh
# The mesh benchmark's peers (bench/mesh.bench.ts): HAProxy, nginx (its backend) and wrk, from
# Debian's packages, installed when one is missing. The packages' services are kept from starting
# (a policy-rc.d that refuses every start, in place only while apt runs), and disabled under
# systemd: the benchmark starts its own processes with its own configurations, on loopback only.
# Not part of CI (.ci/run runs only the reconcile benchmark). Needs root and apt-get.
set -eu

missing=
for tool in haproxy nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-deps: missing:$missing; run as root (apt-get install -y haproxy nginx wrk)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-deps: missing:$missing and no apt-get here; install haproxy, nginx and wrk" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
saved=
if [ -e "$policy" ]; then
  saved="$(mktemp /usr/sbin/policy-rc.d.orrery-saved.XXXXXX)"
  cp -p "$policy" "$saved"
fi
restore() {
  if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore EXIT
trap 'exit 1' HUP INT TERM
printf '#!/bin/sh\n# bench-deps.sh: no service starts while it installs\nexit 101\n' >"$policy"
chmod 755 "$policy"

echo "bench-deps: installing haproxy nginx wrk (missing:$missing)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq haproxy nginx wrk >/dev/null

# Under systemd the units are enabled by the packages: not at boot, not now.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now haproxy.service nginx.service >/dev/null 2>&1 || true
fi
