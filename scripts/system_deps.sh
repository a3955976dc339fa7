#!/usr/bin/env bash
# System packages the test suite uses: Debian's chromium for the browser tests (never a
# downloaded browser) and @playcanvas/splat-transform 2.7 (npm) as an independent format reader.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "system_deps: chromium missing and not root; browser tests will skip" >&2
  fi
fi
if command -v npm >/dev/null 2>&1 && [ ! -x tools/node_modules/.bin/splat-transform ]; then
  mkdir -p tools
  npm install --silent --prefix tools @playcanvas/splat-transform@2.7 >/dev/null 2>&1 \
    || echo "system_deps: npm install of splat-transform failed; export cross-checks will skip" >&2
fi
