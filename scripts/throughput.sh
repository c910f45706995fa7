#!/usr/bin/env bash
# Runs per hour of a sweep of small runs on this machine: two 1,500-step training runs at p = 59,
# d_model 128 side by side, one thread each (what `make -j2` on 2 cores does), against the PyTorch
# reference doing the same (../shared/bench/torch_reference.py, two processes, one thread each).
# Wall time from start to the end of both, so start-up, evaluation and checkpoint writing count
# for `train` (the reference only times its steps' loop plus its start-up).
#
#   scripts/throughput.sh REF_PY [BIN] [STEPS]
#
# REF_PY: a Python with torch (README, "Benchmarks"); BIN: the release binaries (default
# $CARGO_TARGET_DIR/release, built by `make build`); STEPS: steps per run (default 1500).
set -euo pipefail
ref_py=${1:?usage: scripts/throughput.sh REF_PY [BIN] [STEPS]}
bin=${2:-${CARGO_TARGET_DIR:-$HOME/.cache/clock-pizza/target}/release}
steps=${3:-1500}
here=$(cd "$(dirname "$0")/.." && pwd)
ref=$here/../shared/bench/torch_reference.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
per_hour() { python3 -c "print(f'{2 * 3600 / ($2 - $1):.1f}')"; }

# Ours: the default experiment's two α = 1 runs (seeds 0 and 1) with `steps` steps.
"$bin/gen-data" --config "$here/pipelines/default.yaml" --out "$work/dataset.parquet" >/dev/null 2>&1
t0=$(now)
for seed in 0 1; do
  RAYON_NUM_THREADS=1 "$bin/train" --config "$here/pipelines/default.yaml" --set train.steps="$steps" \
    --run "alpha1_seed$seed" --data "$work/dataset.parquet" --out "$work/alpha1_seed$seed" >/dev/null 2>&1 &
done
wait
t1=$(now)

# The PyTorch reference: the same model, data size and optimizer, full batch, α = 1.
for seed in 0 1; do
  "$ref_py" "$ref" --p 59 --steps "$steps" --threads 1 --alpha 1.0 >"$work/torch$seed.json" &
done
wait
t2=$(now)

ours=$(per_hour "$t0" "$t1")
theirs=$(per_hour "$t1" "$t2")
echo "runs of $steps steps at p = 59, d_model 128, 2 processes x 1 thread, $(date -u +%F) on $(nproc) cores:"
echo "  pizza   $(python3 -c "print(f'{$t1 - $t0:.1f}')") s wall for 2 runs: $ours runs/hour"
echo "  pytorch $(python3 -c "print(f'{$t2 - $t1:.1f}')") s wall for 2 runs: $theirs runs/hour ($(cat "$work/torch0.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])') ms/step median)"
echo "  ratio   $(python3 -c "print(f'{$theirs and $ours / $theirs:.1f}')")x"
