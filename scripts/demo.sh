#!/usr/bin/env bash
# The all-in-one demo: starts `shoal server` on 127.0.0.1:6443 with its data in
# .shoal/demo (its local agent keeps VMs and networks in namespace shoal-local),
# and creates guest cluster org-acme/demo (1 control plane + 2 workers) from the
# seeded `test` Release, waiting until it is Ready.
# Safe to run again: a running server and an existing cluster are reused.
# `scripts/demo.sh stop` deletes the cluster and stops the server by its PID.
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
    # Delete the demo cluster first: its controller removes the Machines, the local
    # agent stops their VMs and removes their network, then the server goes.
    "$BIN" --kubeconfig "$DATA/data/admin.kubeconfig" cluster delete demo --org acme --wait || true
    kill -TERM "$(cat "$PIDFILE")"; echo "stopped shoal server (pid $(cat "$PIDFILE"))"
  fi
  rm -f "$PIDFILE"
  exit 0
fi

if running; then
  echo "shoal server already running (pid $(cat "$PIDFILE"))"
else
  # Prometheus and Alertmanager as the server's children, where installed.
  monitoring=()
  if command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null; then
    monitoring=(--monitoring)
  fi
  "$BIN" server --data-dir "$DATA/data" --listen "$LISTEN" --test-image-dir "$PWD/images/out" "${monitoring[@]}" >"$DATA/server.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    [ -f "$DATA/data/admin.kubeconfig" ] && "$BIN" --kubeconfig "$DATA/data/admin.kubeconfig" get releases >/dev/null 2>&1 && break
    running || { echo "shoal server failed to start:"; cat "$DATA/server.log"; exit 1; }
    sleep 0.2
  done
  echo "started shoal server (pid $(cat "$PIDFILE")), log: $DATA/server.log"
fi

KC=$DATA/data/admin.kubeconfig
SHOAL() { "$BIN" --kubeconfig "$KC" "$@"; }
# The server seeded the `test` Release (the test image in images/out) at first start.
SHOAL get organization acme >/dev/null 2>&1 || SHOAL org create acme --display-name "ACME Corp"
if SHOAL get cluster demo -n org-acme >/dev/null 2>&1; then
  echo "cluster org-acme/demo exists; waiting for it to be Ready"
  for _ in $(seq 1 900); do
    phase=$(SHOAL get cluster demo -n org-acme -o json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("phase",""))')
    [ "$phase" = Ready ] && break
    running || { echo "shoal server stopped:"; tail -20 "$DATA/server.log"; exit 1; }
    sleep 1
  done
  [ "$phase" = Ready ] || { echo "cluster demo is $phase, not Ready; see: shoal cluster get demo --org acme"; exit 1; }
else
  # The controllers allocate its network and PKI, create 1 control-plane and
  # 2 worker Machines, the scheduler puts them on the local agent (host "local"),
  # which boots them as VMs in network namespace shoal-local.
  SHOAL cluster create --name demo --org acme --release test \
    --control-plane 1 --workers 2 --cpu 1 --memory 512Mi --disk 1Gi --wait --timeout 900
fi
echo
SHOAL cluster get demo --org acme
SHOAL get hosts
# A kubeconfig with a client certificate from the cluster's CA. No flag names the
# gateway: the server publishes its address (status.gatewayAddress, here its own
# listener 127.0.0.1:9443), and since api.demo.acme.shoal.local has no DNS record
# the kubeconfig connects there with that name as tls-server-name (SNI routing to
# the control plane's port 6443).
SHOAL kubeconfig create --cluster demo --org acme --cn-prefix demo --groups demo \
  --ttl 8h --output "$DATA/demo.kubeconfig"
KUBECTL=${KUBECTL:-/opt/shoal/kubernetes-client/usr/bin/kubectl}
[ -x "$KUBECTL" ] || KUBECTL=kubectl
echo "through the gateway: $KUBECTL --kubeconfig $DATA/demo.kubeconfig get --raw /version"
"$KUBECTL" --kubeconfig "$DATA/demo.kubeconfig" get --raw /version; echo
cat <<MSG

Shoal is running at https://$LISTEN, with cluster org-acme/demo (1 control plane,
2 workers) as three VMs on this machine's local agent, in network namespace
shoal-local; nothing in your own network namespace was touched. The test image
does not run Kubernetes.
  export KUBECONFIG=$KC
  kubectl get clusters,nodepools,machines -n org-acme     # or: $BIN get machines -n org-acme
  $BIN cluster scale demo --org acme --workers 3
  cat $DATA/data/agent/vms/org-acme/demo-cp-0/console.log
  $KUBECTL --kubeconfig $DATA/demo.kubeconfig get --raw /api   # the identity the guest saw
Web UI: https://$LISTEN/ui (sign in with the token in $KC, users[0].user.token)
Monitoring (when Prometheus is installed): http://127.0.0.1:9090/targets and /alerts,
  Alertmanager http://127.0.0.1:9093
Stop it with: make demo-stop (it deletes the cluster, so its VMs stop too)
MSG
