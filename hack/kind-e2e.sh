#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster made by kind: builds the image (deploy/Dockerfile),
# creates the cluster, loads the image and runs hack/e2e-checks.sh (deploy/, the examples, a
# runtime restart that keeps its replicas, nothing left after deletion).
# Needs a Docker engine and `kind` on PATH; test/e2e/kind.test.ts runs it when both exist.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${ORRERY_KIND_CLUSTER:-orrery-e2e}
image=orrery:dev

cleanup() { [ -n "${KEEP_CLUSTER:-}" ] || kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "==> building $image"
docker build -f deploy/Dockerfile -t "$image" .
echo "==> creating kind cluster $cluster"
kind create cluster --name "$cluster" --wait 120s
kind load docker-image "$image" --name "$cluster"
ctx="kind-$cluster"

# Workloads run on the node's filesystem (--workload-root=/host), and web.yaml's server is
# Node.js, which a kind node does not have: the image's node binary is copied onto it.
node_container="$cluster-control-plane"
image_node=$(docker create "$image")
docker cp "$image_node:/usr/local/bin/node" /tmp/orrery-e2e-node
docker rm "$image_node" >/dev/null
docker cp /tmp/orrery-e2e-node "$node_container:/usr/local/bin/node"
rm -f /tmp/orrery-e2e-node

# The checks the real-node test runs too (test/e2e/realnode.test.ts).
KUBECTL="kubectl --context $ctx" ON_NODE="docker exec $node_container" NODE_NAME="$node_container" \
  bash hack/e2e-checks.sh
echo "==> kind e2e passed"
