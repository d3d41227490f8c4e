#!/bin/sh
# Written by Shoal's bootstrap: `shoal-calico` installs Calico on a new cluster from
# its first control-plane node: the Tigera operator from Calico's release manifest,
# then the Installation for the cluster's pod network once the operator has
# registered its API. Each step is tried again while the API server, the registry or
# the operator is not there yet; the script fails, naming the step, after its tries.
set -u
tries=${SHOAL_CALICO_TRIES:-90}
pause=${SHOAL_CALICO_PAUSE:-10}

# step NAME COMMAND...: runs COMMAND until it succeeds, at most $tries times.
step() {
  name=$1
  shift
  i=1
  until "$@"; do
    if [ "$i" -ge "$tries" ]; then
      echo "shoal-calico: $name failed $tries times; giving up" >&2
      exit 1
    fi
    echo "shoal-calico: $name failed (try $i of $tries); trying again in ${pause}s" >&2
    i=$((i + 1))
    sleep "$pause"
  done
}

# Server-side apply: the operator's manifest is too large for the annotation a
# client-side apply keeps, and applying again changes nothing.
step "applying the Tigera operator ($OPERATOR_MANIFEST)" \
  kubectl --kubeconfig "$KUBECONFIG_FILE" apply --server-side --force-conflicts -f "$OPERATOR_MANIFEST"
# The operator registers operator.tigera.io itself; until it has, the Installation
# is refused as an unknown kind.
step "applying the Installation ($INSTALLATION)" \
  kubectl --kubeconfig "$KUBECONFIG_FILE" apply --server-side -f "$INSTALLATION"
echo "shoal-calico: the Tigera operator and the Installation are applied"
