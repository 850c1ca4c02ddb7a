#!/usr/bin/env bash
# Prints the bin directory of a Node.js that Orrery runs on, installing one if needed:
#   export PATH="$(hack/node.sh):$PATH"
#
# The node on PATH is used when it is at least the major of the pinned release. Otherwise the
# pinned release (.nvmrc, the one place it is recorded) is installed from the npm registry into
# .node/ beside this checkout (or $ORRERY_NODE_PREFIX): the platform package node-linux-<arch>
# carries the same bin/node and include/node (headers, for the native addon) as the release
# tarball, and npm verifies it against the registry's integrity hash. Nothing else is downloaded;
# a second run with the release in place is instant and offline.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want="$(tr -d ' \n\r' <"$root/.nvmrc")"
want_major="${want%%.*}"
prefix="${ORRERY_NODE_PREFIX:-$root/.node}"

log() { printf 'hack/node.sh: %s\n' "$*" >&2; }

if [ "${ORRERY_NODE_FORCE_PINNED:-}" != "1" ] && command -v node >/dev/null 2>&1; then
  have="$(node -p 'process.versions.node' 2>/dev/null || true)"
  if [ -n "$have" ] && [ "${have%%.*}" -ge "$want_major" ]; then
    dirname "$(command -v node)"
    exit 0
  fi
fi

if [ -x "$prefix/bin/node" ] && [ "$("$prefix/bin/node" -p 'process.versions.node')" = "$want" ]; then
  echo "$prefix/bin"
  exit 0
fi

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  ppc64le) arch=ppc64le ;;
  s390x) arch=s390x ;;
  *) log "no Node.js package for $(uname -m) on the npm registry; install Node.js $want_major or newer yourself"; exit 1 ;;
esac
command -v npm >/dev/null 2>&1 || { log "npm is needed to fetch Node.js $want from the npm registry"; exit 1; }

log "installing Node.js $want (node-linux-$arch from the npm registry) into $prefix"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "node-linux-$arch@$want" >/dev/null)
mkdir -p "$tmp/unpacked"
tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$tmp/unpacked" --strip-components=1
[ -x "$tmp/unpacked/bin/node" ] && [ -f "$tmp/unpacked/include/node/node_api.h" ] || {
  log "node-linux-$arch@$want has no bin/node or include/node"; exit 1; }
rm -rf "$prefix"
mkdir -p "$(dirname "$prefix")"
mv "$tmp/unpacked" "$prefix"
echo "$prefix/bin"
