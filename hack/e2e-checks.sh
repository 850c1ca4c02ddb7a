#!/usr/bin/env bash
# The end-to-end checks of Orrery on a real Kubernetes node, shared by the kind test
# (hack/kind-e2e.sh) and the real-node test (test/e2e/realnode.test.ts), so that both prove the
# same things:
#   1. `kubectl apply -k deploy/`: the operator Deployment and the runtime and proxy DaemonSets
#      become ready under the RBAC and admission policies deploy/ ships;
#   2. examples/hello.yaml runs to Running and Available, and is deleted;
#   3. examples/web.yaml: three replicas Running on the node as plain processes, and requests
#      through the Service's virtual IP answer from each of them;
#   4. the runtime's container killed: kubelet restarts it, and it re-adopts the replicas without
#      restarting them (same pids, still alive) and the Service still answers;
#   5. the examples deleted, then `kubectl delete -k deploy/`: no workload process, cgroup or
#      pinned BPF object of the node's runtime is left on the node.
#
# Environment:
#   KUBECTL    the kubectl command (default: kubectl), e.g. "kubectl --context kind-orrery-e2e"
#   ON_NODE    prefix that runs a command on the node (default: none, the script runs on the
#              node, in its network and mount namespaces), e.g. "docker exec orrery-e2e-control-plane"
#   NODE_NAME  the node's name (required): its Host, its cgroups orrery/<node>, its BPF pins
#   ctr finds containerd through CONTAINERD_ADDRESS when the node's is not at the default path.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NODE_NAME:?NODE_NAME is required: the node the checks run on}"
read -r -a k <<<"${KUBECTL:-kubectl}"
read -r -a on_node <<<"${ON_NODE:-}"
node() { "${on_node[@]}" "$@"; }
step() { printf '==> %s\n' "$*"; }
# What a reader of a failure needs: the objects, the pods and the Orrery components' last lines.
diagnose() {
  {
    "${k[@]}" get hosts,inst,rep,osvc -o wide || true
    "${k[@]}" get inst,rep -o jsonpath='{range .items[*]}{.kind} {.metadata.name}: {.status.message} {.status.conditions}{"\n"}{end}' || true
    "${k[@]}" -n orrery-system get pods -o wide || true
    for c in deploy/orrery-operator ds/orrery-runtime ds/orrery-proxy; do
      echo "--- $c"
      "${k[@]}" -n orrery-system logs "$c" --all-containers --tail=25 --prefix 2>&1 | cut -c1-400 || true
    done
  } >&2
}
fail() {
  printf 'e2e check failed: %s\n' "$*" >&2
  diagnose
  exit 1
}
trap 'status=$?; trap - ERR; printf "e2e check failed: line %s exited %s\n" "$LINENO" "$status" >&2; diagnose; exit "$status"' ERR

step "installing Orrery (kubectl apply -k deploy/)"
"${k[@]}" apply -k deploy/
"${k[@]}" -n orrery-system rollout status deploy/orrery-operator --timeout=180s
"${k[@]}" -n orrery-system rollout status ds/orrery-runtime --timeout=180s
"${k[@]}" -n orrery-system rollout status ds/orrery-proxy --timeout=180s
# Which data path the node's runtime took (Host.status.meshDataPath); with EXPECT_KERNEL_FASTPATH=1
# (a node with BPF and cgroup v2) the kernel's, with its programs pinned on the node.
"${k[@]}" wait --for=condition=Ready "host/$NODE_NAME" --timeout=120s
datapath=$("${k[@]}" get host "$NODE_NAME" -o jsonpath='{.status.meshDataPath}')
echo "mesh data path on $NODE_NAME: $datapath"
if [ "${EXPECT_KERNEL_FASTPATH:-}" = 1 ]; then
  case "$datapath" in *'"kernel":true'*) ;; *) fail "the kernel fast path is not in use: $datapath" ;; esac
  node test -e "/sys/fs/bpf/orrery/$NODE_NAME/orrery_connect4" || fail "no pinned program in /sys/fs/bpf/orrery/$NODE_NAME"
fi

step "hello"
"${k[@]}" apply -f examples/hello.yaml
"${k[@]}" wait --for=jsonpath='{.status.phase}'=Running rep/hello-0 --timeout=120s
"${k[@]}" wait --for=condition=Available inst/hello --timeout=60s
"${k[@]}" delete -f examples/hello.yaml --wait=true --timeout=60s

step "web, through its Service"
"${k[@]}" apply -f examples/web.yaml
for i in 0 1 2; do
  "${k[@]}" wait --for=jsonpath='{.status.phase}'=Running "rep/web-$i" --timeout=120s
done
"${k[@]}" wait --for=jsonpath='{.status.readyEndpoints}'=3 osvc/web --timeout=60s
vip=$("${k[@]}" get osvc web -o jsonpath='{.status.virtualIP}')

# Requests until each of the three replicas has answered (bounded: 90 requests, 2 s each).
answered_by_each() {
  local seen="" answer
  for _ in $(seq 90); do
    answer=$(node curl -fsS --max-time 2 "http://$vip/" 2>&1 || true)
    case "$answer" in
      "hello from web-"[0-2]) case " $seen " in *" $answer "*) ;; *) seen="$seen $answer" ;; esac ;;
      *) sleep 0.5 ;;
    esac
    [ "$(grep -o 'web-' <<<"$seen" | wc -l)" -ge 3 ] && { echo "answered:$seen"; return 0; }
  done
  echo "answered only by:$seen (last: $answer)" >&2
  return 1
}
answered_by_each || fail "web did not answer from each replica through http://$vip/"

pids_of_web() {
  for i in 0 1 2; do
    "${k[@]}" get "rep/web-$i" -o jsonpath='{range .status.processes[*]}{.pid}{" "}{end}'
  done
}
pids_before=$(pids_of_web)
for pid in $pids_before; do node kill -0 "$pid" || fail "web's pid $pid is not a live process on the node"; done
echo "web's processes on the node: $pids_before"

step "the runtime's container killed: kubelet restarts it, it re-adopts the replicas"
pod=$("${k[@]}" -n orrery-system get pod -l app.kubernetes.io/name=orrery-runtime \
  --field-selector "spec.nodeName=$NODE_NAME" -o jsonpath='{.items[0].metadata.name}')
container=$("${k[@]}" -n orrery-system get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')
restarts=$("${k[@]}" -n orrery-system get pod "$pod" -o jsonpath='{.status.containerStatuses[0].restartCount}')
runtime_pid=$(node ctr -n k8s.io task ls | awk -v id="${container#containerd://}" '$1 == id { print $2 }')
[ -n "$runtime_pid" ] || fail "no containerd task for the runtime's container $container"
node kill -KILL "$runtime_pid"
for _ in $(seq 120); do
  now=$("${k[@]}" -n orrery-system get pod "$pod" -o jsonpath='{.status.containerStatuses[0].restartCount}')
  [ "$now" -gt "$restarts" ] && break
  sleep 1
done
[ "$now" -gt "$restarts" ] || fail "kubelet did not restart the runtime's container"
"${k[@]}" -n orrery-system wait --for=condition=Ready "pod/$pod" --timeout=120s
"${k[@]}" wait --for=condition=Ready "host/$NODE_NAME" --timeout=60s
"${k[@]}" wait --for=jsonpath='{.status.readyEndpoints}'=3 osvc/web --timeout=60s
pids_after=$(pids_of_web)
[ "$pids_after" = "$pids_before" ] || fail "the replicas' pids changed across the runtime's restart: $pids_before -> $pids_after"
for pid in $pids_after; do node kill -0 "$pid" || fail "web's pid $pid died across the runtime's restart"; done
echo "same processes after the restart: $pids_after"
answered_by_each || fail "web did not answer from each replica after the runtime's restart"

step "deleting the examples, then deploy/: nothing of the runtime's is left on the node"
"${k[@]}" delete -f examples/web.yaml --wait=true --timeout=60s
for _ in $(seq 60); do
  [ -z "$("${k[@]}" get rep -o name)" ] && break
  sleep 1
done
[ -z "$("${k[@]}" get rep -o name)" ] || fail "Replicas are left after deleting examples/web.yaml"
for pid in $pids_after; do
  for _ in $(seq 30); do node kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if node kill -0 "$pid" 2>/dev/null; then fail "web's process $pid is still running"; fi
done
"${k[@]}" delete -k deploy/ --wait=true --timeout=180s
"${k[@]}" -n orrery-system wait --for=delete pod --all --timeout=120s 2>/dev/null || true
# The runtime, stopped with nothing running, removes its per-host cgroup and BPF pins.
left=$(node sh -c "ls -d /sys/fs/cgroup/*/orrery/$NODE_NAME /sys/fs/cgroup/orrery/$NODE_NAME \
  /sys/fs/bpf/orrery/$NODE_NAME 2>/dev/null" || true)
[ -z "$left" ] || fail "left on the node: $left"
echo "no cgroup or BPF pin of $NODE_NAME's runtime is left"
echo "==> e2e checks passed"
