#!/usr/bin/env bash
# The main job, on its embedded defaults (local files under data/, runs/, reports/; SQLite storage):
# collect Dark Room learning histories and expert episodes, run the architecture x context-length
# ablation and the Expert Distillation baseline through `zoo sweep` (2 workers), write the report.
# Every trial is selected on validation goals and plays the test goals once, at the end.
#   scripts/main.sh           3 training seeds x 3 evaluation seeds (times: BENCHMARKS.md, "Main job")
#   scripts/main.sh --full    5 training seeds (the AD paper's count), as its own studies
#   scripts/main.sh --quick   a first look, minutes: the transformer AD and ED at one context, one
#                             seed; shows the AD effect itself (held-out return rising in context)
# Rerunning resumes: complete dataset shards and finished trials are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
storage="sqlite:///runs/sweeps.db"
ablation=darkroom_ablation ed=darkroom_ed seeds=() suffix=""
case "${1:-}" in
  --quick) ablation=darkroom_ablation_quick ed=darkroom_ed_quick ;;
  --full) seeds=(--seeds 0 1 2 3 4) suffix=_full ;;
  "") ;;
  *) echo "usage: scripts/main.sh [--quick|--full]" >&2; exit 2 ;;
esac
# --overwrite: the job's own datasets follow its configs (a dataset collected by an older config
# is replaced; one that matches is kept, shard by shard)
$ZOO collect --config configs/collect/darkroom.yaml --overwrite
$ZOO collect --config configs/collect/darkroom_expert.yaml --overwrite
# two workers, one core each: the first trains the ED baseline and then joins the second on the
# ablation grid (workers of one study share its grid; no point is trained twice)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
sweep() { $ZOO sweep run --config "configs/sweeps/$1.yaml" --name "$1$suffix" "${seeds[@]}" --storage "$storage"; }
(sweep "$ed" && sweep "$ablation") &
first=$!
# a failing worker takes the other down with it instead of leaving it running unattended
trap 'pkill -TERM -P "$first" 2>/dev/null; kill "$first" 2>/dev/null' ERR
sweep "$ablation"
wait "$first"
$ZOO report --storage "$storage" --study "$ablation$suffix" --study "$ed$suffix" \
  --out "reports/darkroom${ablation#darkroom_ablation}$suffix"
