#!/usr/bin/env bash
# Builds OpenSplat's CPU mode from its public source against the libtorch inside the pinned torch
# wheel (.venv) and Debian's OpenCV, for scripts/bench_opensplat.sh. Prints the binary's path last.
#
# Usage: scripts/build_opensplat.sh [BUILD_DIR]          (default: outputs/opensplat)
# Environment:
#   OPENSPLAT_SRC   an OpenSplat checkout to build instead of cloning OPENSPLAT_REPO at OPENSPLAT_REF
#   OPENSPLAT_REPO  (https://github.com/pierotofy/OpenSplat)   OPENSPLAT_REF (v1.1.5, the version benchmarked)
#   DEPS_DIR        a folder holding json/, nanoflann/, cxxopts/ and glm/ checkouts (the versions OpenSplat's
#                   CMakeLists.txt names) for a machine where CMake cannot download them itself
#   JOBS            parallel compile jobs (default 1: libtorch's headers take ~2 GB a job)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
BUILD=${1:-$ROOT/outputs/opensplat}
REPO=${OPENSPLAT_REPO:-https://github.com/pierotofy/OpenSplat}
REF=${OPENSPLAT_REF:-v1.1.5}
[ -x "$PY" ] || { echo "error: $PY not found (make setup, or PYTHON=/path/to/python)" >&2; exit 2; }
TORCH_CMAKE=$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'share', 'cmake'))")
[ -d "$TORCH_CMAKE/Torch" ] || { echo "error: $TORCH_CMAKE/Torch missing: the torch wheel has no libtorch CMake files" >&2; exit 2; }

command -v git >/dev/null || [ -n "${OPENSPLAT_SRC:-}" ] || { echo "error: git not found (apt-get install git)" >&2; exit 2; }
mkdir -p "$BUILD"
SRC=${OPENSPLAT_SRC:-$BUILD/src}
if [ -z "${OPENSPLAT_SRC:-}" ] && [ ! -f "$SRC/CMakeLists.txt" ]; then
  git clone -q --depth 1 --branch "$REF" "$REPO" "$SRC.tmp" && mv "$SRC.tmp" "$SRC"
fi
[ -f "$SRC/CMakeLists.txt" ] || { echo "error: $SRC is not an OpenSplat checkout (no CMakeLists.txt)" >&2; exit 2; }

if ! dpkg -s libopencv-dev >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get install -y -q libopencv-dev >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libopencv-dev >/dev/null; }
fi
for tool in cmake g++; do command -v $tool >/dev/null || { echo "error: $tool not found (apt-get install cmake g++ git)" >&2; exit 2; }; done

DEPS=()
if [ -n "${DEPS_DIR:-}" ]; then
  for pair in NLOHMANN_JSON:json NANOFLANN:nanoflann CXXOPTS:cxxopts GLM:glm; do
    dir=$DEPS_DIR/${pair#*:}
    [ -d "$dir" ] || { echo "error: $dir not found (DEPS_DIR needs json/, nanoflann/, cxxopts/, glm/)" >&2; exit 2; }
    DEPS+=("-DFETCHCONTENT_SOURCE_DIR_${pair%%:*}=$dir")
  done
fi
echo "building OpenSplat's CPU mode from $SRC (several minutes)" >&2
cmake -S "$SRC" -B "$BUILD/build" -DCMAKE_BUILD_TYPE=Release -DGPU_RUNTIME=CPU -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" \
  "${DEPS[@]}" >"$BUILD/cmake.log" 2>&1 || { echo "error: cmake failed, see $BUILD/cmake.log" >&2; exit 1; }
cmake --build "$BUILD/build" --target opensplat -j "${JOBS:-1}" >"$BUILD/make.log" 2>&1 \
  || { echo "error: the build failed, see $BUILD/make.log" >&2; exit 1; }
echo "OpenSplat built: $BUILD/build/opensplat (logs: $BUILD/cmake.log, $BUILD/make.log)" >&2
echo "$BUILD/build/opensplat"
