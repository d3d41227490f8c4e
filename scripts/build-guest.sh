#!/usr/bin/env bash
# Builds `shoal-guest`, the agent of the test guest image, as a static binary and prints
# its path on stdout (progress goes to stderr). The image installs it as /bin/shoal:
#   SHOAL_GUEST_BIN=$(scripts/build-guest.sh) images/build-test-image.sh
#
# Static glibc (+crt-static, symbols stripped): the musl target is not installable on
# every machine. An explicit --target keeps RUSTFLAGS off build scripts and proc
# macros, and keeps this build in its own directory (target/x86_64-unknown-linux-gnu),
# so it never invalidates the workspace's normal builds. A second run is a no-op.
set -euo pipefail

log() { printf '[build-guest] %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
bin="$root/target/$target/release/shoal-guest"

command -v cargo >/dev/null || { log "cargo is missing: install a Rust toolchain"; exit 1; }

log "cargo build --release -p shoal-guest --target $target (static)"
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
  cargo build --quiet --release -p shoal-guest --target "$target")

[ -x "$bin" ] || { log "cargo left no $bin"; exit 1; }
# A static binary has no ELF interpreter: file says "statically linked" (or
# "static-pie linked"), and ldd finds no shared libraries.
if command -v file >/dev/null; then
  desc=$(file -b "$bin")
  case $desc in
    *static*) ;;
    *) log "$bin is not static: $desc"; exit 1 ;;
  esac
elif ldd "$bin" 2>&1 | grep -q '=>'; then
  log "$bin is not static: $(ldd "$bin" 2>&1 | tr '\n' ' ')"
  exit 1
fi
log "static: $bin ($(du -h "$bin" | cut -f1))"
printf '%s\n' "$bin"
