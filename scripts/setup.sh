#!/usr/bin/env bash
# Installs what Shoal's build, tests and demo need. Idempotent: safe to run again.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
# Debian's kubernetes-client (kubectl 1.20) is the kubectl the tests use. Some images
# ship another package owning /usr/bin/kubectl, so Shoal unpacks Debian's into its own
# directory instead of replacing a binary the machine already has.
KUBECTL_DIR=/opt/shoal/kubernetes-client
if [ ! -x "$KUBECTL_DIR/usr/bin/kubectl" ]; then
  log "fetching Debian's kubernetes-client"
  apt-get update -qq
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq kubernetes-client)
  mkdir -p "$KUBECTL_DIR"
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$KUBECTL_DIR"
  rm -rf "$tmp"
fi
"$KUBECTL_DIR/usr/bin/kubectl" version --client >/dev/null

for tool in cc pkg-config; do
  command -v "$tool" >/dev/null || need_apt+=(build-essential pkg-config)
done
# protoc builds the etcd-client crate's gRPC stubs (the etcd store backend).
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# A real etcd cluster for the etcd store's e2e tests: etcd-server ships /usr/bin/etcd,
# and pulls in etcd-client (etcdctl).
command -v etcd >/dev/null || need_apt+=(etcd-server)
# QEMU boots the test guest image under TCG; cpio and kmod's modinfo build it.
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
# qemu-img makes the VMs' copy-on-write overlays.
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
# QEMU needs its firmware (SeaBIOS); apt installs it as a recommendation, so name it.
[ -f /usr/share/seabios/bios-256k.bin ] || need_apt+=(seabios)
command -v cpio >/dev/null || need_apt+=(cpio)
command -v modinfo >/dev/null || need_apt+=(kmod)
# The host agent: nftables isolates guest networks; nsenter (util-linux) and ip
# (iproute2) start QEMU and the tests' hosts inside network namespaces.
command -v nft >/dev/null || need_apt+=(nftables)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
# HAProxy is the gateway benchmark's baseline (TCP mode, routing by req.ssl_sni). Its
# package does not start a daemon where there is no init system; the benchmark runs its
# own on loopback.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# cloud-init's `cloud-init schema` checks the user-data Shoal renders (crates/bootstrap's
# tests, which also read it back with its python3-yaml).
fresh_cloud_init=0
if ! command -v cloud-init >/dev/null; then
  need_apt+=(cloud-init)
  fresh_cloud_init=1
fi
# The Kubernetes node image (images/build-kubernetes-image.sh): debootstrap makes its
# Debian root filesystem, mkfs.ext4 -d (e2fsprogs) its disk, python3 its OCI archives;
# its e2e test runs dnsmasq (dnsmasq-base) for the lab network's DHCP.
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v python3 >/dev/null || need_apt+=(python3)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
# Network boot (`shoal pxe`, tests/e2e/tests/pxe.rs): iPXE for PXE firmware
# (undionly.kpxe, ipxe.efi), the iPXE option ROMs QEMU's NICs boot from, and curl,
# whose tftp:// client fetches from Shoal's TFTP server.
[ -f /usr/lib/ipxe/undionly.kpxe ] || need_apt+=(ipxe)
[ -f /usr/lib/ipxe/qemu/efi-virtio.rom ] || need_apt+=(ipxe-qemu)
command -v curl >/dev/null || need_apt+=(curl)
# Debian's Prometheus: promtool checks and unit-tests deploy/prometheus's alert rules and
# parses the dashboards' queries (tests/e2e/tests/monitoring_rules.rs). Installing the
# packages enables their systemd units; nothing here starts them.
# BMC power control (tests/e2e/tests/bmc.rs): libvirt runs the machines that
# sushy-tools' Redfish emulator powers; its libvirt driver needs Debian's bindings.
command -v libvirtd >/dev/null || need_apt+=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients)
/usr/bin/python3 -c 'import libvirt' 2>/dev/null || need_apt+=(python3-libvirt)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Shoal uses cloud-init here only as a checker: when this script brought it in, keep it
# from configuring this machine (network, host name) at its next boot. A machine that
# already had cloud-init keeps its own setting.
if [ "$fresh_cloud_init" = 1 ] && [ ! -e /etc/cloud/cloud-init.disabled ]; then
  mkdir -p /etc/cloud
  touch /etc/cloud/cloud-init.disabled
  log "cloud-init installed as a schema checker; disabled at boot (/etc/cloud/cloud-init.disabled)"
fi

command -v cargo >/dev/null || { log "cargo is missing: install a Rust toolchain"; exit 1; }

# cargo-machete finds dependencies a crate declares but never uses (make test runs it).
# Installed into ~/.cargo/bin, outside the checkout, once per version.
MACHETE_VERSION=0.9.2
if ! cargo machete --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
  log "installing cargo-machete $MACHETE_VERSION"
  cargo install --quiet --locked --version "$MACHETE_VERSION" cargo-machete
fi

# The test guest image (Debian's kernel and busybox-static) with the static guest agent
# as /bin/shoal: cargo and the image's stamp make both no-ops when current.
guest_bin=$("$(dirname "$0")/build-guest.sh")
SHOAL_GUEST_BIN="$guest_bin" "$(dirname "$0")/../images/build-test-image.sh"

# sushy-tools, the Redfish BMC emulator of the BMC tests, from PyPI into a venv under
# ~/.cache/shoal, keyed by its version; Debian's python3 with its libvirt bindings.
SUSHY_VERSION=2.2.0
SUSHY_VENV="$HOME/.cache/shoal/sushy-tools-$SUSHY_VERSION"
if [ ! -x "$SUSHY_VENV/bin/sushy-emulator" ]; then
  log "installing sushy-tools $SUSHY_VERSION into $SUSHY_VENV"
  rm -rf "$SUSHY_VENV"
  /usr/bin/python3 -m venv --system-site-packages "$SUSHY_VENV"
  "$SUSHY_VENV/bin/pip" install -q "sushy-tools==$SUSHY_VERSION"
fi
"$SUSHY_VENV/bin/python" -c 'import libvirt, bcrypt, sushy_tools' \
  || { log "sushy-tools in $SUSHY_VENV cannot import libvirt or bcrypt"; exit 1; }

# moto, the AWS stand-in of the AWS provider's tests (moto_server), from PyPI into a
# venv under ~/.cache/shoal keyed by its version.
MOTO_VERSION=5.2.1
MOTO_VENV="$HOME/.cache/shoal/moto-$MOTO_VERSION"
if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  log "installing moto $MOTO_VERSION into $MOTO_VENV"
  rm -rf "$MOTO_VENV"
  /usr/bin/python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi
"$MOTO_VENV/bin/python" -c 'import moto.server' \
  || { log "moto in $MOTO_VENV cannot be imported"; exit 1; }

# The OIDC provider the identity tests sign in with (npm oidc-provider), cached
# under ~/.cache/shoal/npm by a stamp of its package lock and server.
command -v node >/dev/null && command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
log "ok: OIDC provider in $(bash "$(dirname "$0")/oidc-provider.sh" install)"

# The browser tests of the web UI: Debian's Chromium, driven by npm playwright-core
# with axe-core (scripts/browser/), cached like the OIDC provider.
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
log "ok: $(chromium --version 2>/dev/null | head -1); browser driver in $(bash "$(dirname "$0")/npm-tool.sh" browser install)"

log "ok: kubectl $("$KUBECTL_DIR/usr/bin/kubectl" version --client --short 2>/dev/null || true)"
