#!/usr/bin/env bash
# The main job, on its embedded defaults (local files under data/, runs/, reports/; SQLite storage):
# collect Dark Room learning histories, run the architecture x context-length ablation and the
# Expert Distillation baseline through `zoo sweep` (2 workers), and write the report.
#   scripts/main.sh           the CPU-sized ablation (42 trials + 2 ED trials): 37.5 minutes on the
#                             2-core sandbox (BENCHMARKS.md), plus ~2.5 minutes of set-up when fresh
#   scripts/main.sh --quick   a first look, about 2 minutes (3 tiny backbones, 100 steps each)
# Rerunning resumes: complete dataset shards and finished trials are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
variant=""
if [ "${1:-}" = "--quick" ]; then variant="_quick"; fi
storage="sqlite:///runs/sweeps.db"
# --overwrite: the job's own datasets follow its configs (a dataset collected by an older config
# is replaced; one that matches is kept, shard by shard)
$ZOO collect --config "configs/collect/darkroom${variant}.yaml" --overwrite
if [ -z "$variant" ]; then  # the ED baseline trains on expert episodes (the quick one on late ones)
  $ZOO collect --config configs/collect/darkroom_expert.yaml --overwrite
fi
$ZOO sweep --config "configs/sweeps/darkroom_ablation${variant}.yaml" --storage "$storage" --workers 2
$ZOO sweep --config "configs/sweeps/darkroom_ed${variant}.yaml" --storage "$storage" --workers 2
$ZOO report --storage "$storage" --study "darkroom_ablation${variant}" \
  --study "darkroom_ed${variant}" --out "reports/darkroom${variant}"
