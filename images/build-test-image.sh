#!/usr/bin/env bash
# Builds Shoal's test guest image from Debian packages: images/out/vmlinuz and
# images/out/initrd.img (cpio newc, gzip) holding busybox-static, an /init script and
# the virtio modules. It stands in for a cloud image in tests; it does not run
# Kubernetes.
#
# Idempotent and cached: the input versions are recorded in images/out/stamp, and a
# second run with unchanged inputs does nothing. Downloaded .deb files are kept in
# images/out/cache. The kernel package is unpacked with dpkg-deb -x, never installed.
#
# /init runs every executable in /etc/shoal/boot.d/ in the background before `shoal
# guest`: a second initrd loaded after this one can bring services that way
# (images/build-host-layer.sh).
#
# Hook for the guest agent: set SHOAL_GUEST_BIN to a static `shoal` binary and it is
# copied to /bin/shoal in the initramfs; /init then runs `shoal guest` after the boot
# markers and powers off when it exits.
#
# Needs: apt-get, apt-cache, dpkg-deb, cpio, gzip, kmod's modinfo (scripts/setup.sh).
set -euo pipefail

log() { printf '[test-image] %s\n' "$*" >&2; }

here=$(cd "$(dirname "$0")" && pwd)
out="$here/out"
cache="$out/cache"
work="$out/work"
# The virtio drivers the guest needs, and the ACPI power button with its evdev
# device (`shoal guest` powers off on a press: QEMU's system_powerdown), and 802.1Q
# VLANs (a bare-metal host's production network may be a VLAN of its NIC); their
# dependencies are resolved below.
modules=(virtio_pci virtio_net virtio_blk virtio_console button evdev 8021q)

for tool in apt-get apt-cache dpkg-deb cpio gzip modinfo sha256sum; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run scripts/setup.sh"; exit 1; }
done

# Debian's linux-image-amd64 is a metapackage: the kernel is its versioned dependency.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  log "apt lists are missing linux-image-amd64: running apt-get update"
  apt-get update -qq
fi
kernel_pkg=$(apt-cache depends --no-recommends --no-suggests linux-image-amd64 \
  | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$kernel_pkg" ] || { log "cannot resolve linux-image-amd64's kernel package"; exit 1; }
version_of() { apt-cache show --no-all-versions "$1" | sed -n 's/^Version: //p' | head -n1; }
kernel_ver=$(version_of "$kernel_pkg")
busybox_ver=$(version_of busybox-static)

guest_sum=none
if [ -n "${SHOAL_GUEST_BIN:-}" ]; then
  [ -x "$SHOAL_GUEST_BIN" ] || { log "SHOAL_GUEST_BIN=$SHOAL_GUEST_BIN is not an executable"; exit 1; }
  guest_sum=$(sha256sum "$SHOAL_GUEST_BIN" | cut -d' ' -f1)
fi

stamp="kernel=$kernel_pkg $kernel_ver
busybox-static=$busybox_ver
modules=${modules[*]}
shoal-guest=$guest_sum
script=$(sha256sum "$0" | cut -d' ' -f1)"

if [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/stamp" ] \
  && [ "$(cat "$out/stamp")" = "$stamp" ]; then
  log "up to date ($kernel_pkg $kernel_ver, busybox-static $busybox_ver): nothing to do"
  exit 0
fi

mkdir -p "$cache"
fetch() { # package version -> path of the cached .deb
  local pattern deb
  pattern="$1_${2//:/%3a}_*.deb"
  deb=$(find "$cache" -maxdepth 1 -name "$pattern" | head -n1)
  if [ -z "$deb" ]; then
    log "downloading $1 $2"
    # As root, apt would warn that its _apt sandbox user cannot write the cache.
    local sandbox=()
    [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
    (cd "$cache" && apt-get download -qq "${sandbox[@]}" "$1=$2")
    deb=$(find "$cache" -maxdepth 1 -name "$pattern" | head -n1)
  fi
  [ -n "$deb" ] || { log "apt-get download $1=$2 left no $pattern"; exit 1; }
  printf '%s\n' "$deb"
}
kernel_deb=$(fetch "$kernel_pkg" "$kernel_ver")
busybox_deb=$(fetch busybox-static "$busybox_ver")

rm -rf "$work"
mkdir -p "$work/kernel" "$work/busybox" "$work/root"
log "unpacking $(basename "$kernel_deb") and $(basename "$busybox_deb")"
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"

kver=${kernel_pkg#linux-image-}
moddir="$work/kernel/lib/modules/$kver"
[ -d "$moddir" ] || moddir="$work/kernel/usr/lib/modules/$kver"
[ -d "$moddir" ] || { log "no modules for $kver in $kernel_deb"; exit 1; }
vmlinuz="$work/kernel/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || { log "no boot/vmlinuz-$kver in $kernel_deb"; exit 1; }

# Module name -> file (names use '_' where files may use '-').
declare -A modfile=()
while IFS= read -r f; do
  name=$(basename "$f"); name=${name%%.ko*}; name=${name//-/_}
  modfile[$name]=$f
done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
builtin() { [ -f "$moddir/modules.builtin" ] && grep -Eq "/$1\.ko\$|/${1//_/-}\.ko\$" "$moddir/modules.builtin"; }

# Dependencies first (depth-first), each module once.
declare -A seen=()
order=()
visit() {
  local m=$1 dep deps
  [ -z "${seen[$m]:-}" ] || return 0
  seen[$m]=1
  if [ -z "${modfile[$m]:-}" ]; then
    builtin "$m" && return 0
    log "module $m is neither in $kernel_pkg nor built in"; exit 1
  fi
  deps=$(modinfo -F depends "${modfile[$m]}")
  for dep in ${deps//,/ }; do visit "${dep//-/_}"; done
  order+=("$m")
}
for m in "${modules[@]}"; do visit "$m"; done
log "modules in load order: ${order[*]}"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for m in "${order[@]}"; do
  f=${modfile[$m]}
  case $f in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  printf '%s\n' "$m" >>"$root/lib/modules/load-order"
done
touch "$root/lib/modules/load-order"
if [ -n "${SHOAL_GUEST_BIN:-}" ]; then
  log "including $SHOAL_GUEST_BIN as /bin/shoal"
  cp "$SHOAL_GUEST_BIN" "$root/bin/shoal"
fi

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
# Shoal test image init: mount, load the virtio modules, print the markers the tests
# wait for, run `shoal guest` if the image has it, power off.
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "SHOAL-MODULE-FAILED: $m"
done </lib/modules/load-order
echo "SHOAL-SERIAL: $(cat /sys/class/dmi/id/product_serial 2>/dev/null)"
echo "SHOAL-BOOTED"
# Services a later initrd layer brings (images/build-host-layer.sh's host agent),
# each in the background: they wait for what `shoal guest` writes.
for svc in /etc/shoal/boot.d/*; do
  [ -x "$svc" ] && "$svc" &
done
if [ -x /bin/shoal ]; then
  /bin/shoal guest || echo "SHOAL-GUEST-EXITED: $?"
fi
poweroff -f
INIT
chmod 0755 "$root/init" "$root/bin/busybox"

log "writing $out/initrd.img"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort \
  | cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -9) >"$out/initrd.img.tmp"
cp "$vmlinuz" "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
printf '%s\n' "$stamp" >"$out/stamp"
rm -rf "$work"
log "built $kernel_pkg $kernel_ver + busybox-static $busybox_ver: $out/vmlinuz, $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
