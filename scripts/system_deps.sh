#!/usr/bin/env bash
# System packages the test suite uses: Debian's chromium for the browser tests (never a
# downloaded browser) and, from npm into tools/node_modules (exact versions):
#   @playcanvas/splat-transform 2.7  independent reader/writer of ply, compressed ply, spz, sog
#   playcanvas 2.23.3                the player the browser test loads .sog, .glb and .spz v4 into
#   fzstd 0.1.1                      pure-JS zstd decoder the player's SPZ v4 parser is handed
#   @gltf-transform/core 4.5.1       independent glTF/GLB reader
#   gltf-validator 2.0.0-dev.3.10    Khronos' glTF validator
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "system_deps: chromium missing and not root; browser tests will skip" >&2
  fi
fi
NPM_PACKAGES=(
  @playcanvas/splat-transform@2.7
  playcanvas@2.23.3
  fzstd@0.1.1
  @gltf-transform/core@4.5.1
  gltf-validator@2.0.0-dev.3.10
)
installed() {  # every package present at its pinned version
  node -e '
    const fs = require("fs");
    for (const spec of process.argv.slice(1)) {
      const at = spec.lastIndexOf("@");
      const name = spec.slice(0, at), want = spec.slice(at + 1);
      const file = `tools/node_modules/${name}/package.json`;
      if (!fs.existsSync(file)) process.exit(1);
      const have = JSON.parse(fs.readFileSync(file, "utf8")).version;
      if (have !== want && !have.startsWith(want + ".")) process.exit(1);
    }' "${NPM_PACKAGES[@]}" 2>/dev/null
}
if command -v npm >/dev/null 2>&1 && ! installed; then
  mkdir -p tools
  npm install --silent --no-audit --no-fund --save-exact --prefix tools "${NPM_PACKAGES[@]}" >/dev/null 2>&1 \
    || echo "system_deps: npm install into tools/ failed; export cross-checks and player tests will fail" >&2
fi
