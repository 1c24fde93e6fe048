#!/usr/bin/env bash
# Tune every backbone that has no committed settings yet, one study after another, two workers
# each (one core each), into the main job's SQLite storage; each study writes
# configs/tuned/darkroom/<backbone>.yaml, which the ablation reads. Trials per worker: TRIALS
# (default 3), SLOW_TRIALS for mamba and mamba2 (default 2; their trials cost 2-3x the others').
#   bench/tune_all.sh [BACKBONE...]        default: every backbone without configs/tuned/darkroom/<b>.yaml
# Cost and what each study chose: BENCHMARKS.md ("Tuning").
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
storage=${STORAGE:-sqlite:///runs/sweeps.db}
backbones=("$@")
if [ ${#backbones[@]} -eq 0 ]; then
  for b in lstm simple_gla linear_attention gru mamba mamba2 transformer; do
    [ -e "configs/tuned/darkroom/$b.yaml" ] || backbones+=("$b")
  done
fi
$ZOO collect --config configs/collect/darkroom.yaml  # kept when complete
export OMP_NUM_THREADS=1
for b in "${backbones[@]}"; do
  case "$b" in mamba|mamba2) n=${SLOW_TRIALS:-2} ;; *) n=${TRIALS:-3} ;; esac
  start=$(date +%s)
  $ZOO sweep run --config configs/sweeps/darkroom_tune.yaml --backbone "$b" --n_trials "$n" \
    --workers 2 --storage "$storage"
  echo "tune_all: $b: $(( $(date +%s) - start )) s for $n trials per worker (uptime: $(uptime))"
done
