#!/usr/bin/env bash
# Runs a command with Node.js >= 22.18 first on PATH (22.18 is the first 22.x that runs .ts files
# without a flag, which the tests and benches rely on). If the machine's node is older (Debian
# and many CI images ship 20), installs Node 24 LTS from the npm registry (package node@24)
# once into a cache folder outside the repo and uses it.
#   ./scripts/node24.sh npm ci && ./scripts/node24.sh npm start
set -euo pipefail

node_ok() {
  command -v node >/dev/null 2>&1 &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=18)?0:1)' 2>/dev/null
}

if ! node_ok; then
  # npm reads its global config (where a machine keeps `cafile` for a corporate CA, or a
  # registry mirror) from <prefix>/etc/npmrc, and derives the prefix from `--prefix` or from the
  # location of the node running it. Both change below — the install uses --prefix, and every
  # later npm runs on the private node — so that file would silently drop out and downloads fail
  # with SELF_SIGNED_CERT_IN_CHAIN. Ask the machine's npm where the file is now and pin it for
  # the install and for the command (an npm_config_* variable outranks the default location).
  if command -v npm >/dev/null 2>&1; then
    globalconfig="$(npm config get globalconfig 2>/dev/null || true)"
    if [ -n "$globalconfig" ]; then export npm_config_globalconfig="$globalconfig"; fi
  fi
  dir="${PCOIP_LB_NODE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/pcoip-lb/node24}"
  if [ ! -x "$dir/node_modules/.bin/node" ]; then
    echo "node24.sh: installing Node 24 into $dir (machine has $(node --version 2>/dev/null || echo 'no node'))" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error node@24 >&2
  fi
  export PATH="$dir/node_modules/.bin:$PATH"
fi
if [ "$#" -eq 0 ]; then node --version; exit 0; fi
exec "$@"
