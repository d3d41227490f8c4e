#!/usr/bin/env bash
# A Node tool of Shoal's tests (scripts/<tool>/: package.json, package-lock.json and
# its .mjs files), installed with `npm ci` into a cache outside the checkout keyed by
# a stamp of those inputs, so a fresh clone on the same machine reuses it.
#   npm-tool.sh TOOL install             installs if needed; prints the directory
#   npm-tool.sh TOOL run ENTRY.mjs ARGS  installs if needed, then runs ENTRY with node
set -euo pipefail
tool="${1:?usage: npm-tool.sh TOOL install | run ENTRY.mjs ARGS}"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/$tool" && pwd)"
inputs=("$src/package.json" "$src/package-lock.json" "$src"/*.mjs)
stamp=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
cache="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}/npm/$tool-$stamp"

install() {
  if [ ! -f "$cache/.done" ]; then
    command -v node >/dev/null || { echo "npm-tool.sh: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
    local tmp="$cache.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "${inputs[@]}" "$tmp/"
    (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$tmp/.done"
    rm -rf "$cache"
    mv "$tmp" "$cache"
  fi
  echo "$cache"
}

case "${2:-}" in
  install) install ;;
  run)
    entry="${3:?usage: npm-tool.sh TOOL run ENTRY.mjs ARGS}"
    shift 3
    install >/dev/null
    exec node "$cache/$entry" "$@"
    ;;
  *) echo "usage: $0 TOOL install | run ENTRY.mjs ARGS" >&2; exit 2 ;;
esac
