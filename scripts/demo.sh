#!/usr/bin/env bash
# The all-in-one demo: starts `shoal server` on 127.0.0.1:6443 with its data in
# .shoal/demo, and applies an example organization, release and 3-node cluster.
# Safe to run again: a running server is reused and the objects are re-applied.
# `scripts/demo.sh stop` stops the server by its recorded PID.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${SHOAL_DEMO_DIR:-$PWD/.shoal/demo}
LISTEN=${SHOAL_DEMO_LISTEN:-127.0.0.1:6443}
BIN=${SHOAL_BIN:-$PWD/target/debug/shoal}
PIDFILE=$DATA/server.pid
mkdir -p "$DATA"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  if running; then
    # Delete the demo's Machines first, so that the local agent stops their VMs
    # and removes their network before the server goes.
    KC=$DATA/data/admin.kubeconfig
    for m in demo-cp-0 demo-worker-0 demo-worker-1; do
      "$BIN" --kubeconfig "$KC" delete machine "$m" -n org-acme >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 120); do
      left=$("$BIN" --kubeconfig "$KC" get machines -n org-acme -o json 2>/dev/null \
        | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null || echo 0)
      [ "$left" = 0 ] && break
      sleep 0.5
    done
    kill -TERM "$(cat "$PIDFILE")"; echo "stopped shoal server (pid $(cat "$PIDFILE")) and its demo VMs"
  fi
  rm -f "$PIDFILE"
  exit 0
fi

if running; then
  echo "shoal server already running (pid $(cat "$PIDFILE"))"
else
  "$BIN" server --data-dir "$DATA/data" --listen "$LISTEN" >"$DATA/server.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    [ -f "$DATA/data/admin.kubeconfig" ] && "$BIN" --kubeconfig "$DATA/data/admin.kubeconfig" get releases >/dev/null 2>&1 && break
    running || { echo "shoal server failed to start:"; cat "$DATA/server.log"; exit 1; }
    sleep 0.2
  done
  echo "started shoal server (pid $(cat "$PIDFILE")), log: $DATA/server.log"
fi

KC=$DATA/data/admin.kubeconfig
# The release's image paths are relative to the repository; the agent needs them absolute.
sed "s|images/out/|$PWD/images/out/|" examples/demo.yaml | "$BIN" --kubeconfig "$KC" apply -f -

# Until the cluster controller (IPAM, scheduler) lands, the demo does its job by
# hand: it gives the cluster a VNI and node network, and pins one control-plane
# and two worker Machines to the server's local agent (host "local").
TOKEN=$(sed -n 's/^ *token: *//p' "$KC" | head -n1)
curl -fsS --cacert "$DATA/data/tls/ca.crt" -H "Authorization: Bearer $TOKEN" \
  -X PATCH -H 'Content-Type: application/merge-patch+json' \
  "https://$LISTEN/apis/shoal.io/v1alpha1/namespaces/org-acme/clusters/demo/status" \
  -d '{"status":{"vni":100,"nodeCidr":"10.100.0.0/24"}}' >/dev/null
machine() { # name role ip mac
  cat <<YAML
---
apiVersion: shoal.io/v1alpha1
kind: Machine
metadata: {name: $1, namespace: org-acme}
spec: {cluster: demo, role: $2, release: test-1, hostName: local, ip: $3, mac: "$4",
       size: {cpu: "1", memory: 512Mi, disk: 1Gi}}
YAML
}
{ machine demo-cp-0 control-plane 10.100.0.10 52:54:00:64:00:0a
  machine demo-worker-0 worker 10.100.0.20 52:54:00:64:00:14
  machine demo-worker-1 worker 10.100.0.21 52:54:00:64:00:15
} | "$BIN" --kubeconfig "$KC" apply -f -

echo "waiting for the demo machines to boot the test image and phone home..."
for _ in $(seq 1 900); do
  ready=$("$BIN" --kubeconfig "$KC" get machines -n org-acme -o json \
    | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["items"] if m.get("status",{}).get("phase")=="Ready"))')
  [ "$ready" = 3 ] && break
  running || { echo "shoal server stopped:"; tail -20 "$DATA/server.log"; exit 1; }
  sleep 0.5
done
echo
"$BIN" --kubeconfig "$KC" get clusters -A
"$BIN" --kubeconfig "$KC" get machines -n org-acme
"$BIN" --kubeconfig "$KC" get hosts
[ "$ready" = 3 ] || { echo "the demo machines are not all Ready; see $DATA/server.log"; exit 1; }
cat <<MSG

Shoal is running at https://$LISTEN, with three VMs of cluster org-acme/demo on
this machine's local agent (network namespace shoal-local; nothing in your own
network namespace was touched). The test image does not run Kubernetes.
  export KUBECONFIG=$KC
  kubectl get machines -n org-acme -w     # or: $BIN get machines -n org-acme
  cat $DATA/data/agent/vms/org-acme/demo-cp-0/console.log
Stop it with: make demo-stop (it deletes the Machines, so their VMs stop too)
MSG
