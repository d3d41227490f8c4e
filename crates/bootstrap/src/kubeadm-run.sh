#!/bin/sh
# Written by Shoal's bootstrap: `shoal-kubeadm init|join --config ...` runs kubeadm
# once containerd answers on its CRI socket, and runs it again when its preflight
# checks failed (they change nothing), up to 3 times. On a slow or emulated CPU
# containerd can answer kubeadm's preflight too late, and kubeadm never retries.
log=${SHOAL_KUBEADM_LOG:-/var/log/shoal-kubeadm.log}
rcfile=${SHOAL_KUBEADM_RC:-/run/shoal-kubeadm.rc}
pause=${SHOAL_KUBEADM_PAUSE:-5}
i=0
until crictl --runtime-endpoint "$CRI_SOCKET" --timeout 30s version >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    echo "shoal-kubeadm: containerd's CRI ($CRI_SOCKET) has not answered in 60 tries; running kubeadm anyway" >&2
    break
  fi
  sleep "$pause"
done
try=1
while :; do
  { kubeadm "$@" 2>&1; echo "$?" >"$rcfile"; } | tee "$log"
  rc=$(cat "$rcfile")
  [ "$rc" = 0 ] && exit 0
  if [ "$try" -ge 3 ] || ! grep -q "error execution phase preflight" "$log"; then
    exit "$rc"
  fi
  echo "shoal-kubeadm: kubeadm $1's preflight checks failed (try $try of 3); they change nothing, so it runs again" >&2
  try=$((try + 1))
  sleep "$((pause * 2))"
done
