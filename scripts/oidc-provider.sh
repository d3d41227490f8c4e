#!/usr/bin/env bash
# The OIDC provider Shoal's tests sign in with (npm oidc-provider, scripts/oidc-provider/).
#   oidc-provider.sh install      npm ci into a cache outside the checkout, keyed by a
#                                 stamp of its inputs; prints the directory
#   oidc-provider.sh run CONFIG   installs if needed, then runs the provider
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/oidc-provider" && pwd)"
stamp=$(cat "$src/package.json" "$src/package-lock.json" "$src/server.mjs" | sha256sum | cut -c1-16)
cache="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}/npm/oidc-provider-$stamp"

install() {
  if [ ! -f "$cache/.done" ]; then
    command -v node >/dev/null || { echo "oidc-provider.sh: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
    local tmp="$cache.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "$src/package.json" "$src/package-lock.json" "$src/server.mjs" "$tmp/"
    (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$tmp/.done"
    rm -rf "$cache"
    mv "$tmp" "$cache"
  fi
  echo "$cache"
}

case "${1:-}" in
  install) install ;;
  run)
    shift
    install >/dev/null
    exec node "$cache/server.mjs" "$@"
    ;;
  *) echo "usage: $0 install | run CONFIG.json" >&2; exit 2 ;;
esac
