#!/usr/bin/env bash
# Our trainer against OpenSplat's CPU mode on the same input: CPU seconds per step and test PSNR, with
# densification as each trainer has it and with it off in both. The same views, images, intrinsics and
# initial points go to both; what is matched, what is each trainer's own and how the conventions are
# checked is in recon/bench/opensplat.py. Without a binary given, scripts/build_opensplat.sh builds
# OpenSplat's CPU mode from its public source first (libtorch from the pinned torch wheel, Debian's OpenCV).
#
# Usage: scripts/bench_opensplat.sh [options]            (builds OpenSplat into outputs/opensplat)
#        OPENSPLAT=/path/to/opensplat scripts/bench_opensplat.sh [options]
#        scripts/bench_opensplat.sh --opensplat /path/to/opensplat [options]
# Options: --steps N (1000)  --scene DIR (../shared/data/llff_fern)  --out DIR (outputs/bench/opensplat)
#          --peer-args "OPENSPLAT OPTIONS" (densify pass only)  --help (all of them)
# The last line printed is one JSON object; OUT/bench.json has it with the details, OUT/logs/ the runs' output.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=${OPENSPLAT:-}
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --opensplat) [ $# -ge 2 ] || { echo "error: --opensplat needs the path of the OpenSplat binary" >&2; exit 2; }
                 BIN=$2; shift 2 ;;
    --opensplat=*) BIN=${1#*=}; shift ;;
    -h|--help) PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m recon.bench.opensplat --help ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -z "$BIN" ]; then
  echo "no OpenSplat binary given (OPENSPLAT=... or --opensplat PATH): building one with scripts/build_opensplat.sh" >&2
  BIN=$(bash "$ROOT/scripts/build_opensplat.sh" | tail -n 1)
fi
if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then
  echo "error: OpenSplat binary $BIN not found or not executable" >&2; exit 2
fi
[ -x "$PY" ] || { echo "error: $PY not found (make setup, or PYTHON=/path/to/python)" >&2; exit 2; }
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m recon.bench.opensplat --opensplat "$BIN" --python "$PY" "${ARGS[@]}"
