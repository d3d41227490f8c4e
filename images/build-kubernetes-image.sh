#!/usr/bin/env bash
# Builds Shoal's Kubernetes node image from the registries alone (Debian's packages
# and the Go module proxy) and prints the directory that holds it on stdout:
#
#   disk.qcow2   a Debian rootfs (systemd, cloud-init, containerd, runc, the CNI
#                plugins, iptables, the node exporter) with kubeadm, kubelet, kubectl
#                and crictl, and every container image a cluster needs preloaded
#   vmlinuz, initrd.img   Debian's kernel and initramfs, for a direct kernel boot
#   manifest.json         versions, image references and the kernel command line
#
# Steps, each cached under $SHOAL_CACHE_DIR/kubernetes (default ~/.cache/shoal),
# keyed by a stamp of its inputs, so a fresh clone on the same machine reuses them:
#   go-kubernetes  the Kubernetes commands, etcd and pause (kubernetes/build)
#   go-addons      flanneld, CoreDNS, crictl and the flannel CNI plugin (kubernetes/addons)
#   rootfs         debootstrap of Debian with the node's packages
#   images         OCI archives of every container image, built from the binaries
#   disk           the assembled filesystem as qcow2, with the kernel and initrd
# A step writes into a temporary directory and renames it into place with its stamp
# last, so an interrupted or failed build never leaves an entry that looks complete.
#
#   images/build-kubernetes-image.sh            build what is missing, print the dir
#   images/build-kubernetes-image.sh --check    verify every cached entry (checksums)
#   images/build-kubernetes-image.sh --step S   build one step (and what it needs)
#
# Needs root (debootstrap, chroot), debootstrap, go, python3, e2fsprogs and
# qemu-utils; scripts/setup.sh installs them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src="$here/kubernetes"
# shellcheck source=kubernetes/versions.env
. "$src/versions.env"

cache_root=${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}
cache="$cache_root/kubernetes"
build_module=${SHOAL_K8S_BUILD_MODULE:-$src/build}
addons_module=${SHOAL_K8S_ADDONS_MODULE:-$src/addons}
mirror=${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Go's module and build caches: shared by every step and every clone on this machine.
go_dir=${SHOAL_GO_DIR:-$cache_root/go}
export GOMODCACHE="$go_dir/mod" GOCACHE="$go_dir/build"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

# The packages of the node's root filesystem.
packages=(
  systemd systemd-sysv udev dbus kmod procps util-linux mount e2fsprogs
  iproute2 ifupdown isc-dhcp-client netbase ca-certificates curl
  cloud-init containerd runc containernetworking-plugins
  iptables nftables ebtables conntrack socat ethtool
  prometheus-node-exporter busybox-static linux-image-amd64 initramfs-tools
)
# The packages whose files make the base layer of the images that run iptables
# (kube-proxy, flanneld); coreutils' cp installs flannel's CNI configuration.
netfilter_packages=(
  libc6 iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0
  libnetfilter-conntrack3 libnfnetlink0 conntrack netbase
  coreutils libacl1 libattr1 libselinux1 libpcre2-8-0 libgmp10
)
kernel_cmdline="root=LABEL=shoal-root rw console=ttyS0 net.ifnames=0"

step=setup
current_tmp=
log() { printf '[kubernetes-image] %s\n' "$*" >&2; }
die() { log "step $step: $*"; exit 1; }
chroot_mounts=()
mount_chroot() { # root: what a chroot that runs dpkg or containerd needs
  local root=$1
  mount -t proc proc "$root/proc" && chroot_mounts+=("$root/proc")
  mount -t sysfs sysfs "$root/sys" && chroot_mounts+=("$root/sys")
  mount --bind /dev "$root/dev" && chroot_mounts+=("$root/dev")
  mount --bind /dev/pts "$root/dev/pts" && chroot_mounts+=("$root/dev/pts")
}
umount_chroot() { # unmounts what the rootfs step mounted, innermost first
  local i
  for ((i = ${#chroot_mounts[@]} - 1; i >= 0; i--)); do
    umount "${chroot_mounts[i]}" 2>/dev/null || umount -l "${chroot_mounts[i]}" 2>/dev/null || true
  done
  chroot_mounts=()
}
preload_pid=
on_exit() {
  local rc=$?
  if [ -n "$preload_pid" ]; then kill "$preload_pid" 2>/dev/null; wait "$preload_pid" 2>/dev/null; fi
  umount_chroot
  if [ "$rc" -ne 0 ]; then
    # The step's temporary directory never became an entry: remove it.
    # Never remove a tree that still has a mount inside it (the chroot binds /dev).
    if [ -n "$current_tmp" ]; then
      if grep -q " $current_tmp/" /proc/mounts; then
        log "leaving $current_tmp in place: something is still mounted inside it"
      else
        rm -rf "$current_tmp"
      fi
    fi
    log "step $step failed (exit $rc); nothing half-built was marked complete"
  fi
}
trap on_exit EXIT

sha() { sha256sum | cut -c1-16; }
files_hash() { # paths... -> one hash of their names and contents
  local f
  for f in "$@"; do printf '%s\n' "${f#"$here"/}"; cat "$f"; done | sha
}

# --- cache entries --------------------------------------------------------------
# An entry is a directory with a `.stamp` file:
#   step=<name>
#   inputs=<hash>
#   file <sha256> <size> <path>   one line per output file
# It is complete when the stamp names its step and inputs, and every file exists with
# its size (and, with --check, its checksum).

verify() { # dir step inputs full -> 0, or prints why not and returns 1
  local dir=$1 want_step=$2 want_inputs=$3 full=$4 line kind sum size path
  [ -d "$dir" ] || { echo "not built"; return 1; }
  [ -f "$dir/.stamp" ] || { echo "$dir has no .stamp"; return 1; }
  [ "$(sed -n 1p "$dir/.stamp")" = "step=$want_step" ] \
    || { echo "$dir/.stamp is corrupt: its first line is not step=$want_step"; return 1; }
  [ "$(sed -n 2p "$dir/.stamp")" = "inputs=$want_inputs" ] \
    || { echo "$dir/.stamp is corrupt or for other inputs: want inputs=$want_inputs"; return 1; }
  local n=0
  while read -r kind sum size path; do
    [ "$kind" = file ] || { echo "$dir/.stamp is corrupt: unexpected line '$kind $sum'"; return 1; }
    [ -f "$dir/$path" ] || { echo "$dir/$path is missing"; return 1; }
    [ "$(stat -c %s "$dir/$path")" = "$size" ] || { echo "$dir/$path has the wrong size"; return 1; }
    if [ "$full" = 1 ] && [ "$(sha256sum "$dir/$path" | cut -d' ' -f1)" != "$sum" ]; then
      echo "$dir/$path does not match its checksum"; return 1
    fi
    n=$((n + 1))
  done < <(sed -n '3,$p' "$dir/.stamp")
  [ "$n" -gt 0 ] || { echo "$dir/.stamp is corrupt: it lists no files"; return 1; }
}

seal() { # tmpdir final step inputs files... : writes the stamp, renames into place
  local tmp=$1 final=$2 name=$3 inputs=$4 f
  shift 4
  {
    printf 'step=%s\ninputs=%s\n' "$name" "$inputs"
    for f in "$@"; do
      [ -f "$tmp/$f" ] || die "expected output $f was not produced"
      printf 'file %s %s %s\n' "$(sha256sum "$tmp/$f" | cut -d' ' -f1)" "$(stat -c %s "$tmp/$f")" "$f"
    done
  } > "$tmp/.stamp.new"
  mv "$tmp/.stamp.new" "$tmp/.stamp"
  rm -rf "$final"
  mv "$tmp" "$final"
  current_tmp=
}

cached() { # dir step inputs -> 0 when complete; logs and removes a broken entry
  local why
  if why=$(verify "$1" "$2" "$3" 0); then
    return 0
  fi
  if [ -e "$1" ]; then
    log "step $2: cached entry unusable ($why); rebuilding it"
    rm -rf "$1"
  fi
  return 1
}

fresh_tmp() { # final -> a new empty temporary directory beside it
  local tmp="$1.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  printf '%s\n' "$tmp"
}
claim_tmp() { # records the step's temporary directory so a failure removes it
  current_tmp=$1
}

# --- go-kubernetes ---------------------------------------------------------------
k8s_bins=(kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd pause)
go_ldflags() {
  local flags="-s -w" minor p
  minor=$(printf '%s' "$KUBERNETES_VERSION" | cut -d. -f2)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}
go_kubernetes_inputs() {
  { files_hash "$build_module"/go.mod "$build_module"/go.sum "$build_module"/*.go \
      "$build_module"/*/*.go "$src/versions.env"
    go env GOVERSION; go_ldflags; } | sha
}
go_kubernetes_dir() { printf '%s/bin/%s\n' "$cache" "$(go_kubernetes_inputs)"; }
build_go_kubernetes() {
  step=go-kubernetes
  local inputs dir tmp
  inputs=$(go_kubernetes_inputs)
  dir="$cache/bin/$inputs"
  cached "$dir" "$step" "$inputs" && return 0
  tmp=$(fresh_tmp "$dir")
  claim_tmp "$tmp"
  log "step $step: go build of Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION and pause (cold: about 7 minutes on 2 cores)"
  local start=$SECONDS
  (cd "$build_module" && go build -trimpath -tags providerless -ldflags "$(go_ldflags)" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl ./etcd ./pause) \
    || die "go build in $build_module failed (see the compiler output above)"
  [ "$("$tmp/kubeadm" version -o short)" = "$KUBERNETES_VERSION" ] \
    || die "the built kubeadm does not report $KUBERNETES_VERSION"
  seal "$tmp" "$dir" "$step" "$inputs" "${k8s_bins[@]}"
  log "step $step: done in $((SECONDS - start)) s"
}

# --- go-addons ---------------------------------------------------------------------
addon_bins=(coredns flanneld flannel crictl)
go_addons_inputs() {
  { files_hash "$addons_module"/go.mod "$addons_module"/go.sum "$addons_module"/*.go \
      "$addons_module"/*/*.go "$src/versions.env"
    go env GOVERSION; echo flanneld=cgo-static-netgo; } | sha
}
build_go_addons() {
  step=go-addons
  local inputs dir tmp
  inputs=$(go_addons_inputs)
  dir="$cache/addons/$inputs"
  cached "$dir" "$step" "$inputs" && return 0
  tmp=$(fresh_tmp "$dir")
  claim_tmp "$tmp"
  log "step $step: go build of flanneld $FLANNEL_VERSION, CoreDNS $COREDNS_VERSION, crictl $CRI_TOOLS_VERSION and the flannel CNI plugin"
  local start=$SECONDS
  # flanneld links its UDP backend's C proxy, so it needs cgo: linked statically, as
  # flannel's own release build does, it runs in an image with no libc of its own.
  # (Shoal's own CNI plugin first: the smallest, and the likeliest to be edited.)
  (cd "$addons_module" \
    && go build -trimpath -ldflags "-s -w" -o "$tmp/flannel" ./shoal-flannel-cni \
    && CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo \
      -ldflags "-s -w -linkmode external -extldflags -static -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
      -o "$tmp/flanneld" github.com/flannel-io/flannel \
    && go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" ./coredns \
    && go build -trimpath -ldflags "-s -w" -o "$tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl) \
    || die "go build in $addons_module failed (see the compiler output above)"
  seal "$tmp" "$dir" "$step" "$inputs" "${addon_bins[@]}"
  log "step $step: done in $((SECONDS - start)) s"
}

# --- rootfs ------------------------------------------------------------------------
rootfs_inputs() {
  { printf '%s\n' "$DEBIAN_SUITE" "$mirror" "${packages[@]}"; echo rev=2-apt-in-chroot; } | sha
}
build_rootfs() {
  step=rootfs
  local inputs dir tmp
  inputs=$(rootfs_inputs)
  dir="$cache/rootfs/$inputs"
  cached "$dir" "$step" "$inputs" && return 0
  tmp=$(fresh_tmp "$dir")
  claim_tmp "$tmp"
  command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/setup.sh"
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  log "step $step: debootstrap $DEBIAN_SUITE from $mirror (${#packages[@]} packages and their dependencies)"
  local start=$SECONDS root="$tmp/root" logs="$cache_root/logs"
  local log_file="$logs/rootfs-$(date +%Y%m%dT%H%M%S).log"
  mkdir -p "$logs"
  # A minimal Debian first, then the node's packages with apt inside it: apt resolves
  # and configures them the way it does on any Debian machine, and says which failed.
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$mirror" > "$log_file" 2>&1 \
    || { tail -n 20 "$log_file" >&2; die "debootstrap failed (log: $log_file)"; }
  # No service starts inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  mount_chroot "$root"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  { chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update \
      && chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
        --no-install-recommends -o Dpkg::Options::=--force-confdef "${packages[@]}"
  } >> "$log_file" 2>&1 \
    || { umount_chroot; tail -n 30 "$log_file" >&2; die "apt-get install in the chroot failed (log: $log_file)"; }
  umount_chroot
  rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
  # Each VM is a new machine: systemd makes the machine ID at first boot.
  : > "$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  # Nothing of apt's download state or of the documentation is needed on a node.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  # The files other steps use, as the stamp's witnesses that the tree is whole.
  local kernel initrd
  kernel=$(cd "$root" && ls boot/vmlinuz-* | head -n1)
  initrd=$(cd "$root" && ls boot/initrd.img-* | head -n1)
  [ -n "$kernel" ] && [ -n "$initrd" ] || die "debootstrap left no kernel or initrd in /boot"
  tar -C "$root" -cf "$tmp/packages.tar" var/lib/dpkg/status
  seal "$tmp" "$dir" "$step" "$inputs" packages.tar "root/$kernel" "root/$initrd" \
    root/usr/bin/containerd root/usr/bin/cloud-init root/bin/busybox
  log "step $step: done in $((SECONDS - start)) s ($(du -sh "$dir/root" | cut -f1))"
}

# --- images -------------------------------------------------------------------------
image_ref() { printf '%s/%s:%s\n' "$IMAGE_REPOSITORY" "$1" "$2"; }
images_inputs() {
  { printf '%s\n' "$(go_kubernetes_inputs)" "$(go_addons_inputs)" "$(rootfs_inputs)"
    printf '%s\n' "${netfilter_packages[@]}"; files_hash "$src/oci_image.py"; echo rev=1; } | sha
}
image_files=(pause etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy coredns flannel busybox)
# The layer of a package set's files from the rootfs, merged-/usr layout kept.
package_layer() { # rootfs dest packages...
  local root=$1 dest=$2 path canon dir t
  shift 2
  mkdir -p "$dest/usr/bin" "$dest/usr/sbin" "$dest/usr/lib" "$dest/usr/lib64" "$dest/etc" "$dest/run" "$dest/tmp"
  for dir in bin sbin lib lib64; do ln -sfn "usr/$dir" "$dest/$dir"; done
  while IFS= read -r path; do
    case $path in /usr/share/doc/*|/usr/share/man/*|/usr/share/lintian/*|/.|/usr/share/locale/*) continue ;; esac
    [ -e "$root$path" ] || [ -L "$root$path" ] || continue
    [ -d "$root$path" ] && [ ! -L "$root$path" ] && continue
    # The canonical directory (through /lib -> usr/lib and the like), same name.
    canon=$(chroot "$root" readlink -f "$(dirname "$path")")/$(basename "$path")
    mkdir -p "$dest$(dirname "$canon")"
    cp -a "$root$path" "$dest$canon"
  done < <(chroot "$root" dpkg -L "$@" | sort -u)
  # iptables' alternatives, resolved to the nf_tables back end as on the node.
  for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sfn xtables-nft-multi "$dest/usr/sbin/$t"
  done
  cp -a "$root/etc/ld.so.cache" "$dest/etc/"
}
build_images() {
  step=images
  local inputs dir tmp bins addons root
  inputs=$(images_inputs)
  dir="$cache/images/$inputs"
  cached "$dir" "$step" "$inputs" && return 0
  bins="$cache/bin/$(go_kubernetes_inputs)"
  addons="$cache/addons/$(go_addons_inputs)"
  root="$cache/rootfs/$(rootfs_inputs)/root"
  step=images
  tmp=$(fresh_tmp "$dir")
  claim_tmp "$tmp"
  local start=$SECONDS l="$tmp/layers" oci="$src/oci_image.py"
  log "step $step: OCI archives of ${#image_files[@]} images from the built binaries"
  # kubeadm says which images it will run; the control plane's must be ours.
  local expected want
  expected=$("$bins/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" \
    --image-repository "$IMAGE_REPOSITORY") || die "kubeadm config images list failed"
  for want in "$(image_ref coredns "$COREDNS_VERSION")" "$(image_ref pause "$PAUSE_VERSION")" \
    "$(image_ref kube-apiserver "$KUBERNETES_VERSION")"; do
    grep -qx "$want" <<<"$expected" \
      || die "kubeadm $KUBERNETES_VERSION expects other images than versions.env names ($want not in: $(tr '\n' ' ' <<<"$expected"))"
  done
  mkdir -p "$l/pause" "$l/etcd/usr/local/bin" "$l/coredns" "$l/busybox/bin" "$l/flannel/opt/bin"
  cp "$bins/pause" "$l/pause/pause"
  python3 "$oci" "$tmp/pause.tar" --ref "$(image_ref pause "$PAUSE_VERSION")" --entrypoint /pause --layer "$l/pause"
  cp "$bins/etcd" "$l/etcd/usr/local/bin/"
  python3 "$oci" "$tmp/etcd.tar" --ref "$(image_ref etcd "$ETCD_VERSION-0")" --layer "$l/etcd"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    mkdir -p "$l/$c/usr/local/bin"
    cp "$bins/$c" "$l/$c/usr/local/bin/"
    python3 "$oci" "$tmp/$c.tar" --ref "$(image_ref "$c" "$KUBERNETES_VERSION")" --layer "$l/$c"
  done
  package_layer "$root" "$l/netfilter" "${netfilter_packages[@]}"
  mkdir -p "$l/kube-proxy/usr/local/bin"
  cp "$bins/kube-proxy" "$l/kube-proxy/usr/local/bin/"
  python3 "$oci" "$tmp/kube-proxy.tar" --ref "$(image_ref kube-proxy "$KUBERNETES_VERSION")" \
    --layer "$l/netfilter" --layer "$l/kube-proxy"
  cp "$addons/coredns" "$l/coredns/coredns"
  python3 "$oci" "$tmp/coredns.tar" --ref "$(image_ref coredns "$COREDNS_VERSION")" \
    --entrypoint /coredns --layer "$l/coredns"
  cp "$addons/flanneld" "$l/flannel/opt/bin/"
  python3 "$oci" "$tmp/flannel.tar" --ref "$(image_ref flannel "$FLANNEL_VERSION")" \
    --entrypoint /opt/bin/flanneld --layer "$l/netfilter" --layer "$l/flannel"
  # busybox for workloads: Debian's static busybox with a link per applet.
  cp "$root/bin/busybox" "$l/busybox/bin/busybox"
  local applet busybox_version
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$l/busybox/bin/$applet"
  done
  mkdir -p "$l/busybox/etc" "$l/busybox/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$l/busybox/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$l/busybox/etc/group"
  # sed reads the whole help text: `| head -n1` would close the pipe early, and the
  # SIGPIPE that busybox may then get fails the pipeline under pipefail (exit 141).
  busybox_version=$("$root/bin/busybox" 2>/dev/null | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p') || true
  [ -n "$busybox_version" ] || die "cannot read the busybox version"
  python3 "$oci" "$tmp/busybox.tar" --ref "$IMAGE_REPOSITORY/busybox:$busybox_version" \
    --cmd sh --env PATH=/bin --layer "$l/busybox"
  printf '%s\n' "$busybox_version" > "$tmp/busybox.version"
  rm -rf "$l"
  local tars=()
  for c in "${image_files[@]}"; do tars+=("$c.tar"); done
  seal "$tmp" "$dir" "$step" "$inputs" "${tars[@]}" busybox.version
  log "step $step: done in $((SECONDS - start)) s ($(du -sh "$dir" | cut -f1))"
}

# --- disk ---------------------------------------------------------------------------
disk_inputs() {
  { printf '%s\n' "$(images_inputs)" "$kernel_cmdline"
    files_hash $(find "$src/rootfs" -type f | sort) "$here/$(basename "$0")"; } | sha
}
# The container images, imported at build time by the node's own containerd run in a
# chroot of the node's tree: content and unpacked overlayfs snapshots land in
# /var/lib/containerd, namespace k8s.io (where the kubelet looks), so a booted node
# has them at once. (Imported at first boot under TCG, they took about 5 minutes.)
preload_images() { # root images-dir
  local root=$1 images=$2 run=/run/shoal-preload log_file c n=0 sock listed
  log_file="$cache_root/logs/preload-$(date +%Y%m%dT%H%M%S).log"
  mkdir -p "$cache_root/logs" "$root$run/archives"
  cp "$images"/*.tar "$root$run/archives/"
  printf '%s\n' 'version = 2' 'root = "/var/lib/containerd"' "state = \"$run/state\"" \
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]' '[grpc]' "  address = \"$run/containerd.sock\"" \
    > "$root$run/config.toml"
  sock="$root$run/containerd.sock"
  mount_chroot "$root"
  chroot "$root" containerd --config "$run/config.toml" > "$log_file" 2>&1 &
  preload_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.2; done
  [ -S "$sock" ] || { tail -n 20 "$log_file" >&2; die "the node's containerd did not start in the build chroot (log: $log_file)"; }
  for c in "${image_files[@]}"; do
    chroot "$root" ctr --address "$run/containerd.sock" --namespace k8s.io images import \
      "$run/archives/$c.tar" >> "$log_file" 2>&1 \
      || { tail -n 20 "$log_file" >&2; die "ctr images import of $c.tar failed (log: $log_file)"; }
    n=$((n + 1))
  done
  listed=$(chroot "$root" ctr --address "$run/containerd.sock" --namespace k8s.io images ls -q \
    | grep -c "^$IMAGE_REPOSITORY/") || true
  [ "$listed" -ge "$n" ] || die "containerd lists $listed of the $n preloaded images"
  kill "$preload_pid"
  wait "$preload_pid" 2>/dev/null || true
  preload_pid=
  umount_chroot
  ! grep -q " $root/" /proc/mounts || die "mounts are left under $root after the preload"
  rm -rf "${root:?}$run"
}
build_disk() {
  step=disk
  local inputs dir tmp bins addons rootfs images
  inputs=$(disk_inputs)
  dir="$cache/image/$inputs"
  cached "$dir" "$step" "$inputs" && return 0
  bins="$cache/bin/$(go_kubernetes_inputs)"
  addons="$cache/addons/$(go_addons_inputs)"
  rootfs="$cache/rootfs/$(rootfs_inputs)/root"
  images="$cache/images/$(images_inputs)"
  step=disk
  tmp=$(fresh_tmp "$dir")
  claim_tmp "$tmp"
  local start=$SECONDS root="$tmp/root"
  log "step $step: assembling the node's filesystem"
  cp -a "$rootfs" "$root"
  # Shoal's files (rootfs/ in this folder), with the pause image named.
  cp -a "$src/rootfs/." "$root/"
  sed -i "s|@PAUSE_IMAGE@|$(image_ref pause "$PAUSE_VERSION")|" "$root/etc/containerd/config.toml"
  local b
  for b in kubeadm kubelet kubectl; do install -m 0755 "$bins/$b" "$root/usr/local/bin/$b"; done
  install -m 0755 "$addons/crictl" "$root/usr/local/bin/crictl"
  install -m 0755 "$addons/flannel" "$root/usr/lib/cni/flannel"
  mkdir -p "$root/etc/cni/net.d" "$root/etc/kubernetes/manifests"
  log "step $step: preloading ${#image_files[@]} container images into the node's containerd"
  preload_images "$root" "$images"
  chroot "$root" systemctl enable containerd.service kubelet.service \
    prometheus-node-exporter.service >/dev/null 2>&1 || die "systemctl enable in the image failed"
  local kernel initrd
  kernel=$(ls "$root"/boot/vmlinuz-* | head -n1)
  initrd=$(ls "$root"/boot/initrd.img-* | head -n1)
  cp "$kernel" "$tmp/vmlinuz"
  cp "$initrd" "$tmp/initrd.img"
  # The same kubectl, for the machine that drives the cluster (tests, the demo).
  install -m 0755 "$bins/kubectl" "$tmp/kubectl"
  # The filesystem image: free room for the unpacked images, etcd and logs.
  local used size_mib
  used=$(du -sm "$root" | cut -f1)
  size_mib=$(( (used * 2 + 4096 + 511) / 512 * 512 ))
  log "step $step: mkfs.ext4 -d ($used MiB used, $size_mib MiB filesystem) and qemu-img convert"
  truncate -s "${size_mib}M" "$tmp/disk.raw"
  mkfs.ext4 -q -F -L shoal-root -d "$root" "$tmp/disk.raw" || die "mkfs.ext4 -d failed"
  qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2" || die "qemu-img convert failed"
  rm -f "$tmp/disk.raw"
  local refs=() c busybox_version
  busybox_version=$(cat "$images/busybox.version")
  for c in pause:"$PAUSE_VERSION" etcd:"$ETCD_VERSION-0" kube-apiserver:"$KUBERNETES_VERSION" \
    kube-controller-manager:"$KUBERNETES_VERSION" kube-scheduler:"$KUBERNETES_VERSION" \
    kube-proxy:"$KUBERNETES_VERSION" coredns:"$COREDNS_VERSION" flannel:"$FLANNEL_VERSION" \
    busybox:"$busybox_version"; do
    refs+=("\"$IMAGE_REPOSITORY/$c\"")
  done
  cat > "$tmp/manifest.json" <<EOF
{
  "kubernetesVersion": "$KUBERNETES_VERSION",
  "etcdVersion": "$ETCD_VERSION",
  "corednsVersion": "$COREDNS_VERSION",
  "flannelVersion": "$FLANNEL_VERSION",
  "imageRepository": "$IMAGE_REPOSITORY",
  "images": [$(IFS=,; printf '%s' "${refs[*]}")],
  "busybox": "$IMAGE_REPOSITORY/busybox:$busybox_version",
  "criSocket": "unix:///run/containerd/containerd.sock",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "disk": "disk.qcow2",
  "cmdline": "$kernel_cmdline",
  "kubectl": "kubectl"
}
EOF
  rm -rf "$root"
  seal "$tmp" "$dir" "$step" "$inputs" disk.qcow2 vmlinuz initrd.img manifest.json kubectl
  ln -sfn "image/$inputs" "$cache/current.tmp.$$"
  mv -T "$cache/current.tmp.$$" "$cache/current"
  log "step $step: done in $((SECONDS - start)) s (disk.qcow2 $(du -h "$dir/disk.qcow2" | cut -f1))"
}

check_all() {
  local bad=0 why name dir inputs
  for name in go-kubernetes go-addons rootfs images disk; do
    case $name in
      go-kubernetes) inputs=$(go_kubernetes_inputs); dir="$cache/bin/$inputs" ;;
      go-addons) inputs=$(go_addons_inputs); dir="$cache/addons/$inputs" ;;
      rootfs) inputs=$(rootfs_inputs); dir="$cache/rootfs/$inputs" ;;
      images) inputs=$(images_inputs); dir="$cache/images/$inputs" ;;
      disk) inputs=$(disk_inputs); dir="$cache/image/$inputs" ;;
    esac
    if why=$(verify "$dir" "$name" "$inputs" 1); then
      log "step $name: ok ($dir)"
    else
      log "step $name: $why"
      bad=1
    fi
  done
  step=check
  [ "$bad" -eq 0 ] || die "some cached entries are missing or corrupt"
}

PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go is missing: install Go 1.26 (see README)"
mkdir -p "$cache"
case ${1:-} in
  --check) check_all; exit 0 ;;
  --step)
    case ${2:-} in
      go-kubernetes) build_go_kubernetes ;;
      go-addons) build_go_addons ;;
      rootfs) build_rootfs ;;
      images) build_go_kubernetes; build_go_addons; build_rootfs; build_images ;;
      disk) build_go_kubernetes; build_go_addons; build_rootfs; build_images; build_disk ;;
      *) step=args; die "--step takes go-kubernetes, go-addons, rootfs, images or disk" ;;
    esac
    exit 0 ;;
  '') ;;
  *) step=args; die "unknown argument ${1}: use --check or --step STEP" ;;
esac

build_go_kubernetes
build_go_addons
build_rootfs
build_images
build_disk
step=done
printf '%s\n' "$cache/image/$(disk_inputs)"
