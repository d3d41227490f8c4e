#!/usr/bin/env bash
# Builds the host agent's layer for network-booted machines: a gzip'd cpio archive
# loaded after the test image's initrd, which the kernel unpacks over it:
#
#   shoal pxe ... --initrd images/out/initrd.img --initrd images/out/host-layer.img
#
# It holds the `shoal` binary (stripped) at /usr/local/bin/shoal with the dynamic
# loader and the libraries it links, and the service /etc/shoal/boot.d/shoal-agent,
# which the test image's /init starts in the background. The service waits for
# /etc/shoal/agent/agent.env and /etc/shoal/agent/kubeconfig (written from the
# machine's seed, rendered by `shoal pxe --join-kubeconfig`), brings the production
# NIC up with its address (SHOAL_PRODUCTION_*; with SHOAL_PRODUCTION_VLAN, on an
# 802.1Q link of that NIC), and runs `shoal agent` with that
# address as the underlay, restarting it if it exits. This installed system is a
# minimal one: it registers the machine as a Host and keeps its heartbeat, but has
# no QEMU and no nftables modules, so it cannot run guest VMs.
#
# Usage: images/build-host-layer.sh SHOAL_BIN OUT
# Cached: OUT.stamp records the binary's and this script's checksums; a second run
# with the same inputs does nothing.
#
# Needs: strip (binutils), ldd, cpio, gzip (scripts/setup.sh).
set -euo pipefail

log() { printf '[host-layer] %s\n' "$*" >&2; }

[ $# -eq 2 ] || { log "usage: $0 SHOAL_BIN OUT"; exit 2; }
bin=$1
out=$2
[ -x "$bin" ] || { log "$bin is not an executable: build shoal first (cargo build)"; exit 1; }
for tool in strip ldd cpio gzip sha256sum; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run scripts/setup.sh"; exit 1; }
done

stamp="shoal=$(sha256sum "$bin" | cut -d' ' -f1)
script=$(sha256sum "$0" | cut -d' ' -f1)"
if [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; then
  log "up to date: $out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/usr/local/bin" "$root/etc/shoal/boot.d" "$root/var/lib/shoal"
strip -o "$root/usr/local/bin/shoal" "$bin"

# The loader and every library `shoal` links, at the paths it names.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  dest="$root$lib"
  mkdir -p "$(dirname "$dest")"
  cp -L "$lib" "$dest"
done
[ -n "$(find "$root" -name 'ld-linux*' -print -quit)" ] \
  || { log "ldd named no dynamic loader for $bin"; exit 1; }

cat >"$root/etc/shoal/boot.d/shoal-agent" <<'SERVICE'
#!/bin/sh
# The installed system's host agent service (images/build-host-layer.sh).
conf=/etc/shoal/agent/agent.env
kubeconfig=/etc/shoal/agent/kubeconfig
say() { echo "shoal-agent: $*"; }

# cloud-init (here `shoal guest`) writes the kubeconfig, then the settings.
SHOAL_HOST_NAME=
while [ -z "$SHOAL_HOST_NAME" ] || [ ! -f "$kubeconfig" ]; do
  sleep 1
  [ -f "$conf" ] && . "$conf"
done

underlay=
if [ -n "${SHOAL_PRODUCTION_MAC:-}" ]; then
  dev=
  tries=0
  while [ -z "$dev" ] && [ $tries -lt 30 ]; do
    for d in /sys/class/net/*; do
      [ "$(cat "$d/address" 2>/dev/null)" = "$SHOAL_PRODUCTION_MAC" ] && dev=${d##*/}
    done
    [ -n "$dev" ] || sleep 1
    tries=$((tries + 1))
  done
  if [ -z "$dev" ]; then
    say "no NIC has the production MAC $SHOAL_PRODUCTION_MAC: not starting"
    echo "SHOAL-AGENT-FAILED: no production NIC $SHOAL_PRODUCTION_MAC"
    exit 1
  fi
  ip link set "$dev" up
  if [ -n "${SHOAL_PRODUCTION_VLAN:-}" ]; then
    # Production is a VLAN of this NIC: an 802.1Q link on it carries the address.
    vlan_dev="$dev.$SHOAL_PRODUCTION_VLAN"
    if ! ip link add link "$dev" name "$vlan_dev" type vlan id "$SHOAL_PRODUCTION_VLAN"; then
      say "cannot add VLAN $SHOAL_PRODUCTION_VLAN on $dev (is the 8021q module loaded?): not starting"
      echo "SHOAL-AGENT-FAILED: no VLAN $SHOAL_PRODUCTION_VLAN on $dev"
      exit 1
    fi
    dev=$vlan_dev
    ip link set "$dev" up
  fi
  ip addr add "$SHOAL_PRODUCTION_ADDRESS" dev "$dev"
  if [ -n "${SHOAL_PRODUCTION_GATEWAY:-}" ]; then
    ip route replace default via "$SHOAL_PRODUCTION_GATEWAY" dev "$dev"
  fi
  underlay=${SHOAL_PRODUCTION_ADDRESS%/*}
  say "production network up: $SHOAL_PRODUCTION_ADDRESS on $dev"
else
  underlay=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
fi

mkdir -p /var/lib/shoal/agent
while :; do
  say "starting shoal agent as $SHOAL_HOST_NAME ($SHOAL_HOST_ROLE) on $underlay"
  /usr/local/bin/shoal --kubeconfig "$kubeconfig" agent --name "$SHOAL_HOST_NAME" \
    --underlay-ip "$underlay" --state-dir /var/lib/shoal/agent
  say "shoal agent exited ($?): restarting in 5 s"
  sleep 5
done
SERVICE
chmod 0755 "$root/etc/shoal/boot.d/shoal-agent"

mkdir -p "$(dirname "$out")"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort \
  | cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -1) >"$out.tmp"
mv "$out.tmp" "$out"
printf '%s\n' "$stamp" >"$out.stamp"
log "built $out ($(du -h "$out" | cut -f1)) from $bin"
