#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA tests, gsplat against the CPU kernel (values and
# gradients), and the GPU benchmarks, in one run that fits in 8 minutes; writes one JSON.
#
#   scripts/gpu_check.sh [OUT.json]          # default: $OUT/gpu_check.json, else outputs/gpu_check.json
#
# Needs a Python with a CUDA torch and the project's dependencies (PY=... to choose it; default
# .venv/bin/python, else python3). gsplat compiles its CUDA kernels on first use: the build is
# limited to this GPU's architecture (TORCH_CUDA_ARCH_LIST) and all cores (MAX_JOBS), and is given
# at most 300 s. Each step has its own time limit; a failed step is recorded, the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RESULT=${1:-${OUT:-outputs}/gpu_check.json}
WORK=$(mktemp -d)
mkdir -p "$(dirname "$RESULT")"
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")' 2>/dev/null || true)
  export TORCH_CUDA_ARCH_LIST
fi

step() {  # step NAME SECONDS COMMAND...: run, keep rc, seconds and the output's tail
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$WORK/steps.txt"
  echo "$rc $((SECONDS - t0))" >"$WORK/$name.rc"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$WORK/gpu.txt" 2>&1 || true
step imports 60 "$PY" -c 'import torch, gsplat, numba, viser, tyro, plyfile, pycolmap, zstandard; assert torch.cuda.is_available()'
step gsplat_build 300 "$PY" -c 'from gsplat.cuda._backend import _C; assert _C is not None'
step cuda_tests 180 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider
step parity 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_raster.py -k "gsplat or cuda"
step bench_raster 120 "$PY" -m recon.cli bench raster --json
step bench_nerf_encoding 60 "$PY" -m recon.cli bench nerf --json --no-training

"$PY" - "$WORK" "$RESULT" <<'EOF'
import json, pathlib, sys

work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
result = {"gpu": (work / "gpu.txt").read_text().strip() if (work / "gpu.txt").exists() else None, "steps": {}}
for rc_file in sorted(work.glob("*.rc")):
    name = rc_file.stem
    rc, seconds = rc_file.read_text().split()
    log = (work / f"{name}.log").read_text(errors="replace")
    entry = {"rc": int(rc), "seconds": int(seconds), "tail": log[-2000:]}
    if name.startswith("bench_") and rc == "0":
        lines = [ln for ln in log.splitlines() if ln.startswith("{")]
        try:
            entry["result"] = json.loads(lines[-1]) if lines else json.loads(log[log.index("{"):])
        except (ValueError, IndexError):
            pass
    result["steps"][name] = entry
result["ok"] = all(s["rc"] == 0 for s in result["steps"].values())
out.write_text(json.dumps(result, indent=2))
print(json.dumps({k: (v["rc"], v["seconds"]) for k, v in result["steps"].items()}))
print(f"wrote {out}")
EOF
