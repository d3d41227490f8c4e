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
  if running; then kill -TERM "$(cat "$PIDFILE")"; echo "stopped shoal server (pid $(cat "$PIDFILE"))"; fi
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
"$BIN" --kubeconfig "$KC" apply -f examples/demo.yaml
echo
"$BIN" --kubeconfig "$KC" get clusters -A
"$BIN" --kubeconfig "$KC" get nodepools -n org-acme
cat <<MSG

Shoal is running at https://$LISTEN
  export KUBECONFIG=$KC
  kubectl get clusters -A            # or: $BIN get clusters -A
  $BIN token create --org acme --role member
Stop it with: make demo-stop
MSG
