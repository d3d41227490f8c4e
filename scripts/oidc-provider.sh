#!/usr/bin/env bash
# The OIDC provider Shoal's tests sign in with (npm oidc-provider, scripts/oidc-provider/).
#   oidc-provider.sh install      npm ci into a cache outside the checkout, keyed by a
#                                 stamp of its inputs; prints the directory
#   oidc-provider.sh run CONFIG   installs if needed, then runs the provider
set -euo pipefail
tool="$(dirname "${BASH_SOURCE[0]}")/npm-tool.sh"
case "${1:-}" in
  install) exec "$tool" oidc-provider install ;;
  run) shift; exec "$tool" oidc-provider run server.mjs "$@" ;;
  *) echo "usage: $0 install | run CONFIG.json" >&2; exit 2 ;;
esac
