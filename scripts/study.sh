#!/usr/bin/env bash
# The Dark Room study at convergence, resumable from the repository alone: its Optuna journals and
# every trial's record are text under results/darkroom/ (commit them; never the checkpoints under
# runs/). Run it at the start of a session; commit results/ before the session ends; the next
# session (any machine, a fresh clone) runs the same command and continues where the commit left.
#   scripts/study.sh tune [HOURS]   equal tuning: 12 trials per backbone (configs/sweeps/darkroom_tune.yaml)
#   scripts/study.sh check [HOURS]  whether the settings tuned at 8 episodes hold at 0.5 and 2
#                                   (configs/sweeps/darkroom_context_check.yaml, validation only);
#                                   refused until every backbone is tuned
#   scripts/study.sh study [HOURS]  the grid (configs/sweeps/darkroom_study.yaml), then its ED
#                                   (darkroom_study_ed.yaml); refused until every backbone is tuned
#   scripts/study.sh all [HOURS]    the tuning a backbone still needs, the study, then the check
#                                   (`make run`; the check sets nothing the study uses, its
#                                   reading is reported beside the 0.5 and 2-episode columns,
#                                   so the study's results come first)
#   scripts/study.sh status         the progress line alone: trials finished per stage and the
#                                   ETA; nothing collected, no worker started
# STORE=DIR puts the journals, records and tuned settings under DIR instead of the committed
# results/darkroom and configs/tuned/darkroom (`make run` uses runs/study: the same study, its own
# results, compared with the committed ones at the end); `all` starts from every committed tuned
# file that is at this protocol and tunes the rest itself.
# Two workers (one core each) in a low-priority autogroup, so foreground work keeps the machine;
# neither starts a trial after HOURS (default 2.5), and a trial cut off by a stopped machine is
# failed and run again by the next start. A progress line with an ETA (at the pace of the committed
# records) every 10 minutes. Several machines: point every one at one journal file on a shared
# file system (or an RDB URL with --storage) and start each with its own workers; only the first
# start of a stretch may fail the trials left running (this script does it before its workers
# start, so start the other machines' workers after it).
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
PY=${PY:-.venv/bin/python}
what=${1:?usage: scripts/study.sh tune|check|study|all [HOURS], or status}
hours=${2:-2.5}
backbones=(transformer gru lstm linear_attention simple_gla mamba2 mamba gated_deltanet)
COMMITTED=results/darkroom COMMITTED_TUNED=configs/tuned/darkroom
STORE=${STORE:-$COMMITTED}
TUNED=$COMMITTED_TUNED
tune_opts=() check_opts=() study_opts=()
if [ "$STORE" != "$COMMITTED" ]; then  # the same studies, their state and results elsewhere
  TUNED=$STORE/tuned
  tune_opts=(--storage "journal://$STORE/tune.journal" --set "records=$STORE/tune" "output=$TUNED/{backbone}.yaml")
  check_opts=(--storage "journal://$STORE/check.journal" --set "records=$STORE/check" "tuned=$TUNED")
  study_opts=(--storage "journal://$STORE/study.journal" --set "records=$STORE/study" "tuned=$TUNED")
fi
# "backbone: why" for each backbone whose tuned file in folder $1 is not its finished tuning at
# this protocol (the `# tuning:` line against configs/sweeps/darkroom_tune.yaml); `names` keeps
# the backbones
lacking() {
  $ZOO sweep tuned --config configs/sweeps/darkroom_tune.yaml --dir "$1" --backbones "${backbones[@]}"
}
names() { cut -d: -f1; }
case "$what" in
  tune | check | study) stages=("$what") ;;
  all)
    stages=(tune study check)
    mkdir -p "$TUNED"
    if [ "$TUNED" != "$COMMITTED_TUNED" ]; then  # what the committed tuning has finished is not tuned again
      here=$(lacking "$TUNED" | names)
      committed=$(lacking "$COMMITTED_TUNED" | names)
      for b in "${backbones[@]}"; do
        if grep -qx "$b" <<< "$here" && ! grep -qx "$b" <<< "$committed"; then
          cp "$COMMITTED_TUNED/$b.yaml" "$TUNED/$b.yaml"
        fi
      done
    fi ;;
  status) stages=() ;;
  *) echo "scripts/study.sh: unknown stage '$what' (known: tune, check, study, all, status)" >&2; exit 2 ;;
esac
deadline=$(( $(date +%s) + $(python3 -c "print(int(float('$hours') * 3600))") ))
# the study's data: Dark Room's histories with a lockbox carved out of the training goals
if [ "$what" != status ]; then
  [ -d data/darkroom_lockbox ] || $ZOO collect --config configs/collect/darkroom_lockbox.yaml --no_progress
  [ -d data/darkroom_lockbox_expert ] ||
    $ZOO collect --config configs/collect/darkroom_lockbox_expert.yaml --no_progress
fi
mkdir -p runs/study
# every study of every stage, for the progress line
everything=()
for b in "${backbones[@]}"; do everything+=("configs/sweeps/darkroom_tune.yaml:$b"); done
everything+=(configs/sweeps/darkroom_context_check.yaml)
everything+=(configs/sweeps/darkroom_study.yaml configs/sweeps/darkroom_study_ed.yaml)
progress() {
  $PY -m sweeps.progress --workers 2 --pace "$COMMITTED" "${everything[@]}" \
    ${tune_opts[0]:+--tune_storage "${tune_opts[1]}"} ${check_opts[0]:+--check_storage "${check_opts[1]}"} \
    ${study_opts[0]:+--study_storage "${study_opts[1]}"} || true
}

run_stage() {  # tune|check|study: fail what stopped workers left running, then two workers until done
  local stage=$1 runs=()
  local missing untuned
  missing=$(lacking "$TUNED")
  untuned=$(names <<< "$missing")
  if [ "$stage" = tune ]; then
    for b in "${backbones[@]}"; do
      if grep -qx "$b" <<< "$untuned"; then
        runs+=("--config configs/sweeps/darkroom_tune.yaml --backbone $b")
      fi
    done
  else
    if [ -n "$missing" ]; then
      echo "scripts/study.sh: not every backbone is tuned at this protocol yet: run scripts/study.sh tune first" >&2
      sed 's/^/  /' <<< "$missing" >&2
      exit 2
    fi
    runs=("--config configs/sweeps/darkroom_study.yaml" "--config configs/sweeps/darkroom_study_ed.yaml")
    [ "$stage" = study ] || runs=("--config configs/sweeps/darkroom_context_check.yaml")
  fi
  local opts=()
  case "$stage" in
    tune) opts=("${tune_opts[@]}") ;;
    check) opts=("${check_opts[@]}") ;;
    study) opts=("${study_opts[@]}") ;;
  esac
  # the trials a stopped worker left RUNNING (a journal has no heartbeat) are failed and made up
  for run in "${runs[@]}"; do
    # shellcheck disable=SC2086
    $ZOO sweep run $run "${opts[@]}" --n_trials 0 --fail_running true | grep -v "^ \|^trials:" || true
  done
  worker() {
    echo 19 > /proc/self/autogroup 2>/dev/null || true  # below foreground work, across sessions
    for run in "${runs[@]}"; do
      left=$(( deadline - $(date +%s) ))
      [ "$left" -gt 0 ] || break
      # shellcheck disable=SC2086
      OMP_NUM_THREADS=1 $ZOO sweep run $run "${opts[@]}" --timeout "$left" || true
    done
  }
  local pids=()
  for w in 0 1; do
    # each worker its own sampling stream (two workers starting together must not draw one point)
    ZOO_SWEEP_WORKER=$w worker > "runs/study/$stage-worker$w.log" 2>&1 &
    pids+=($!)
  done
  echo "scripts/study.sh: 2 workers of '$stage' until $(date -d "@$deadline" +%H:%M) at the latest; logs runs/study/$stage-worker{0,1}.log"
  alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2> /dev/null && return 0; done; return 1; }
  while alive; do  # a progress line every 10 minutes
    progress
    for _ in $(seq 60); do alive || break; sleep 10; done
  done
  wait
}
for stage in "${stages[@]}"; do
  [ $(( deadline - $(date +%s) )) -gt 0 ] || break
  run_stage "$stage"
done
progress
