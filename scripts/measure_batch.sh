#!/usr/bin/env bash
# recon batch vs the same scenes one after another with recon train, on this machine, in one run.
# Scenes: data/demo and three copies rendered with other seeds (24 + 8 views, 100 px); 300 steps, 8 views.
# Then the batch again one scene at a time (--per-scene-cpus 2: the threads `recon train` uses), which
# isolates Ray's overhead. Also a fixed-overhead probe: one 32 px scene, 1 step, `recon train` vs `recon batch`.
# Usage: scripts/measure_batch.sh [WORKDIR] [PYTHON]   (writes WORKDIR/measure.json)
set -euo pipefail
W=${1:-/tmp/recon-measure}; PY=${2:-.venv/bin/python}
export OMP_WAIT_POLICY=PASSIVE
rm -rf "$W"; mkdir -p "$W/scenes"
cp -r data/demo "$W/scenes/demo"
$PY - "$W" <<'PYEOF'
import sys
from pathlib import Path
from reconstruct.demo import write_demo_scene
w = Path(sys.argv[1])
for seed in (1, 2, 3):
    write_demo_scene(w / "scenes" / f"demo{seed}", seed=seed)
write_demo_scene(w / "scenes" / "tiny", n_train=6, n_test=2, size=32)
PYEOF
S=("$W/scenes/demo" "$W/scenes/demo1" "$W/scenes/demo2" "$W/scenes/demo3")
OPTS=(--views 8 --iters 300)
now() { date +%s.%N; }
echo "{" > "$W/measure.json"
echo "\"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"," >> "$W/measure.json"
t0=$(now)
for s in "${S[@]}"; do
  a=$(now); $PY -m recon.cli train "$s" "${OPTS[@]}" --out "$W/serial/$(basename "$s")" > "$W/serial-$(basename "$s").log" 2>&1; b=$(now)
  echo "\"serial_$(basename "$s")\": $(echo "$b - $a" | bc)," >> "$W/measure.json"
done
t1=$(now)
echo "\"serial_total\": $(echo "$t1 - $t0" | bc)," >> "$W/measure.json"
echo "\"load_mid\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"," >> "$W/measure.json"
a=$(now); $PY -m recon.cli batch "${S[@]}" --out "$W/batch" "${OPTS[@]}" > "$W/batch.log" 2>&1; b=$(now)
echo "\"batch_total\": $(echo "$b - $a" | bc)," >> "$W/measure.json"
a=$(now); $PY -m recon.cli batch "${S[@]}" --out "$W/batch2" "${OPTS[@]}" --per-scene-cpus 2 > "$W/batch2.log" 2>&1; b=$(now)
echo "\"batch_one_at_a_time_total\": $(echo "$b - $a" | bc)," >> "$W/measure.json"
TINY=(--views 4 --init.kind random --init.n-random 800 --preset vanilla --iters 1)
a=$(now); $PY -m recon.cli train "$W/scenes/tiny" "${TINY[@]}" --out "$W/probe-train" > "$W/probe-train.log" 2>&1; b=$(now)
echo "\"probe_train\": $(echo "$b - $a" | bc)," >> "$W/measure.json"
a=$(now); $PY -m recon.cli batch "$W/scenes/tiny" --out "$W/probe-batch" "${TINY[@]}" > "$W/probe-batch.log" 2>&1; b=$(now)
echo "\"probe_batch\": $(echo "$b - $a" | bc)," >> "$W/measure.json"
echo "\"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"" >> "$W/measure.json"
echo "}" >> "$W/measure.json"
cat "$W/measure.json"
