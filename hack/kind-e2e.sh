#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster: kind + deploy/ + examples/hello.yaml.
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
echo "==> kind e2e passed"
