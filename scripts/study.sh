#!/usr/bin/env bash
# The Dark Room study at convergence, resumable from the repository alone: its Optuna journal and
# every trial's record are text under results/darkroom/ (commit them; never the checkpoints under
# runs/). Run it at the start of a session; commit results/ before the session ends; the next
# session (any machine, a fresh clone) runs the same command and continues where the commit left.
#   scripts/study.sh tune [HOURS]   equal tuning: 12 trials per backbone (configs/sweeps/darkroom_tune.yaml)
#   scripts/study.sh study [HOURS]  the grid (configs/sweeps/darkroom_study.yaml), then its ED
#                                   (darkroom_study_ed.yaml); refused until every backbone is tuned
# Two workers (one core each) in a low-priority autogroup, so foreground work keeps the machine;
# neither starts a trial after HOURS (default 2.5), and a trial cut off by a stopped machine is
# failed and run again by the next start. Several machines: point every one at one journal file on
# a shared file system (or an RDB URL with --storage) and start each with its own workers; only the
# first start of a stretch may fail the trials left running (scripts/study.sh does it before its
# workers start, so start the other machines' workers after it).
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
what=${1:?usage: scripts/study.sh tune [HOURS]}
hours=${2:-2.5}
backbones=(transformer gru lstm linear_attention simple_gla mamba2 mamba gated_deltanet)
case "$what" in
  tune) configs=(configs/sweeps/darkroom_tune.yaml) ;;
  study)
    configs=(configs/sweeps/darkroom_study.yaml configs/sweeps/darkroom_study_ed.yaml)
    for b in "${backbones[@]}"; do
      grep -q '^# tuning: .*"trials": 12,' "configs/tuned/darkroom/$b.yaml" 2>/dev/null || {
        echo "scripts/study.sh: $b is not tuned at this protocol yet (configs/tuned/darkroom/$b.yaml has no 12-trial tuning line): run scripts/study.sh tune first" >&2
        exit 2
      }
    done ;;
  *) echo "scripts/study.sh: unknown stage '$what' (known: tune, study)" >&2; exit 2 ;;
esac
# what each worker runs, in order: a tuning study per backbone, or the study's grids
runs=()
for config in "${configs[@]}"; do
  if [ "$what" = tune ]; then
    for b in "${backbones[@]}"; do runs+=("--config $config --backbone $b"); done
  else
    runs+=("--config $config")
  fi
done
deadline=$(( $(date +%s) + $(python3 -c "print(int(float('$hours') * 3600))") ))
# the study's data: Dark Room's histories with a lockbox carved out of the training goals
[ -d data/darkroom_lockbox ] || $ZOO collect --config configs/collect/darkroom_lockbox.yaml --no_progress
[ "$what" = tune ] || [ -d data/darkroom_lockbox_expert ] ||
  $ZOO collect --config configs/collect/darkroom_lockbox_expert.yaml --no_progress
# the trials a stopped worker left RUNNING (a journal has no heartbeat) are failed and made up
for run in "${runs[@]}"; do
  # shellcheck disable=SC2086
  $ZOO sweep run $run --n_trials 0 --fail_running true | grep -v "^ \|^trials:" || true
done
mkdir -p runs/study
worker() {
  echo 19 > /proc/self/autogroup 2>/dev/null || true  # below foreground work, across sessions
  for run in "${runs[@]}"; do
    left=$(( deadline - $(date +%s) ))
    [ "$left" -gt 0 ] || break
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $ZOO sweep run $run --timeout "$left" || true
  done
}
for w in 0 1; do
  # each worker its own sampling stream (two workers starting together must not draw one point)
  ZOO_SWEEP_WORKER=$w worker > "runs/study/$what-worker$w.log" 2>&1 &
done
echo "scripts/study.sh: 2 workers of '$what' until $(date -d "@$deadline" +%H:%M); logs runs/study/$what-worker{0,1}.log"
wait
