#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster: kind + deploy/ + examples/hello.yaml, then
# examples/web.yaml requested through its Service's virtual IP from the node.
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

echo "==> installing Orrery (kubectl apply -k deploy/)"
kubectl --context "$ctx" apply -k deploy/
kubectl --context "$ctx" -n orrery-system rollout status deploy/orrery-operator --timeout=180s
kubectl --context "$ctx" -n orrery-system rollout status ds/orrery-runtime --timeout=180s
kubectl --context "$ctx" -n orrery-system rollout status ds/orrery-proxy --timeout=180s

echo "==> hello"
kubectl --context "$ctx" apply -f examples/hello.yaml
kubectl --context "$ctx" wait --for=jsonpath='{.status.phase}'=Running rep/hello-0 --timeout=120s
kubectl --context "$ctx" wait --for=condition=Available inst/hello --timeout=60s
kubectl --context "$ctx" delete -f examples/hello.yaml --wait=true --timeout=60s

echo "==> web, through its Service"
# Workloads run on the node's filesystem (--workload-root=/host), and web.yaml's server is
# Node.js, which a kind node does not have: the image's node binary is copied onto it.
node_container="$cluster-control-plane"
image_node=$(docker create "$image")
docker cp "$image_node:/usr/local/bin/node" /tmp/orrery-e2e-node
docker rm "$image_node" >/dev/null
docker cp /tmp/orrery-e2e-node "$node_container:/usr/local/bin/node"
rm -f /tmp/orrery-e2e-node
kubectl --context "$ctx" apply -f examples/web.yaml
for i in 0 1 2; do
  kubectl --context "$ctx" wait --for=jsonpath='{.status.phase}'=Running "rep/web-$i" --timeout=120s
done
kubectl --context "$ctx" wait --for=jsonpath='{.status.readyEndpoints}'=3 osvc/web --timeout=60s
vip=$(kubectl --context "$ctx" get osvc web -o jsonpath='{.status.virtualIP}')
# The node's mesh proxy serves the virtual IP on the node's loopback (hostNetwork).
answer=""
for _ in $(seq 30); do
  answer=$(docker exec "$node_container" curl -fsS --max-time 2 "http://$vip/" || true)
  case "$answer" in "hello from"*) break ;; esac
  sleep 1
done
case "$answer" in
  "hello from"*) echo "web answered: $answer" ;;
  *) echo "web did not answer through http://$vip/ (last: $answer)" >&2; exit 1 ;;
esac
kubectl --context "$ctx" delete -f examples/web.yaml --wait=true --timeout=60s
echo "==> kind e2e passed"
