#!/usr/bin/env bash
# The main job, on its embedded defaults (local files under data/, runs/, reports/):
#   scripts/main.sh          the Dark Room study at convergence (configs/sweeps/darkroom_study.yaml
#                            and its ED), into its own storage runs/study/ (not the committed
#                            results/darkroom/): the tuning a backbone's committed settings do not
#                            cover yet, the check of the tuned settings at the other contexts, then
#                            the grid; a progress line with an ETA every 10 minutes;
#                            stopped and rerun, it goes on where it was. At the end, its report says
#                            cell by cell how it compares with the committed results. Its cost:
#                            README ("The study at convergence").
#   scripts/main.sh --quick  a first look, minutes: the transformer AD and ED at one context, one
#                            seed; shows the AD effect itself (held-out return rising in context)
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
case "${1:-}" in
  --quick)
    # --overwrite: the job's own datasets follow its configs (one made by an older config is
    # replaced; one that matches is kept, shard by shard)
    $ZOO collect --config configs/collect/darkroom.yaml --overwrite
    $ZOO collect --config configs/collect/darkroom_expert.yaml --overwrite
    storage="sqlite:///runs/sweeps.db"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    sweep() { $ZOO sweep run --config "configs/sweeps/$1.yaml" --storage "$storage"; }
    # two workers, one core each: the first trains ED's trial, then joins the second on the
    # ablation (workers of one study share its grid; no point is trained twice)
    (sweep darkroom_ed_quick && sweep darkroom_ablation_quick) &
    first=$!
    trap 'pkill -TERM -P "$first" 2>/dev/null; kill "$first" 2>/dev/null' ERR
    sweep darkroom_ablation_quick
    wait "$first"
    $ZOO report --storage "$storage" --study darkroom_ablation_quick --study darkroom_ed_quick \
      --out reports/darkroom_quick ;;
  "")
    STORE=runs/study scripts/study.sh all "${HOURS:-100000}"
    if [ -d runs/study/study ]; then
      # cell by cell against the committed results, once there are any
      against=()
      compgen -G "results/darkroom/study/*/trial-*.json" > /dev/null &&
        against=(--against results/darkroom/study)
      $ZOO report --records runs/study/study "${against[@]}" \
        --out reports/darkroom_study --title "The Dark Room study at convergence (make run)"
    fi ;;
  *) echo "usage: scripts/main.sh [--quick]" >&2; exit 2 ;;
esac
