#!/usr/bin/env bash
# A family's reference result: Algorithm Distillation improves in context on held-out tasks with
# frozen weights, Expert Distillation (the same model on expert episodes only) does not.
#   AD: collect learning histories -> `zoo run` under the family's protocol
#       (configs/protocols/FAMILY.yaml): fit the family's experiment, choose the checkpoint on the
#       validation tasks (never on held-out ones), play every held-out task once (or a fixed
#       sample where tasks are continuous) under each of three evaluation seeds, beside the
#       source learner on the same tasks, and write the run's record (OUT/ad/record.json);
#   ED: the same experiment in ED mode, run the same way.
# `zoo run` is what every sweep trial runs: a reference run and a study's trial are one protocol.
# Prints each stage's wall time, the choice, the in-context curve's key points and the family's
# score (bench/reference_score.py, which also summarises several runs: training seeds):
#   darkroom, key_to_door: final return (last 5 episodes) as a fraction of optimal;
#   darkroom_hard: final success rate (return 1 = goal reached);
#   bandit (ood split): (r - r_random) / (r_UCB - r_random) at the end of the history, UCB being
#     the source learner on the same bandits, r the mean reward of the last 20 pulls.
# Targets and measured results: BENCHMARKS.md ("Dark Room reference run", "Reference runs of the
# other families").
# Usage: bench/reference.sh FAMILY [ad|ed|both] [-- ZOO FIT OPTIONS]
#   FAMILY: darkroom key_to_door darkroom_hard bandit; options after `--` go to both runs (a
#   variant of the experiment, e.g. `-- --data.context_episodes 16 --model.label_smoothing 0.2`;
#   `--config FILE` and `--key value` as `zoo fit` takes them, applied after the experiment)
#   env: SEED=<n> the training seed (default 0: it varies the initialisation, the validation
#   carve and the window order; its evaluation seeds are 1000 x n + 0, 1, 2); STEPS=<n> for a
#   quick smoke run (fit n steps, validate once); OUT=<dir> for the outputs (default
#   runs/reference/FAMILY: a variant's run belongs in its own); STAGE=fit to collect, fit and
#   choose only, printing the validation score the checkpoint was chosen by and playing no test
#   task (a screen of variants: compare their validation scores), then STAGE=evaluate to play the
#   held-out tasks once with the chosen run's selected checkpoint (default: both, in one run)
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
FAMILY=${1:?usage: bench/reference.sh FAMILY [ad|ed|both] [-- ZOO FIT OPTIONS]}
WHICH=${2:-both}
case $WHICH in ad | ed | both) ;; *) echo "unknown run $WHICH: ad, ed or both" >&2; exit 2 ;; esac
STAGE=${STAGE:-all}
case $STAGE in fit | evaluate | all) ;; *) echo "unknown STAGE $STAGE: fit, evaluate or all" >&2; exit 2 ;; esac
shift $(($# < 2 ? $# : 2))
VARIANT=()
if [[ $# -gt 0 ]]; then
  [[ $1 == -- ]] || { echo "options for zoo fit go after --, got $1" >&2; exit 2; }
  shift
  VARIANT=("$@")
fi
FINAL=5

# What differs between families: the held-out tasks and history length of the evaluation, ED's
# expert dataset (the optimal policy on the AD data's tasks: configs/collect/<family>_expert.yaml)
# and, where the family's best member is not its experiment's own model, the `zoo fit` options
# of that member (FIT: before the variant's options, which can override them).
FIT=()
case $FAMILY in
  darkroom)  # all 16 held-out goals
    EVAL=(--episodes 40)
    ED_COLLECT=configs/collect/darkroom_expert.yaml
    ED_FIT=(--data.mode ed --data.path data/darkroom_expert) ;;
  key_to_door)  # all 1,296 held-out (key, door) pairs
    EVAL=(--episodes 40)
    ED_COLLECT=configs/collect/key_to_door_expert.yaml
    ED_FIT=(--data.mode ed --data.path data/key_to_door_expert) ;;
  darkroom_hard)  # all 58 held-out goals
    EVAL=(--episodes 80)
    # mamba2 with Dark Room's tuned settings and its state carried from window to window in
    # training, chosen over mamba on the validation goals (84.6% against 79.8%, 3 training x 3
    # evaluation seeds; BENCHMARKS.md "Dark Room Hard: every episode stored"). Another backbone:
    # `-- --model.backbone ... --config configs/tuned/darkroom/<name>.yaml --data.carry_state false`
    FIT=(--model.backbone configs/backbone/mamba2-100k.yaml --config configs/tuned/darkroom/mamba2.yaml
      --model.compile false --data.carry_state true)
    ED_COLLECT=configs/collect/darkroom_hard_expert.yaml
    ED_FIT=(--data.mode ed --data.path data/darkroom_hard_expert) ;;
  bandit)  # 1,000 out-of-distribution bandits (arm means are continuous: a fixed seeded sample)
    EVAL=(--episodes 100 --split ood --tasks 1000 --final_episodes 20)
    FINAL=20
    ED_COLLECT=configs/collect/bandit_expert.yaml
    ED_FIT=(--data.mode ed --data.path data/bandit_expert) ;;
  *) echo "unknown family $FAMILY: one of darkroom key_to_door darkroom_hard bandit" >&2; exit 2 ;;
esac
EXPERIMENT=configs/experiments/$FAMILY.yaml
OUT=${OUT:-runs/reference/$FAMILY}
PROTOCOL=configs/protocols/$FAMILY.yaml
SEED=${SEED:-0}
# the evaluation seeds of training seed SEED under the protocol (not paired): 1000 x SEED + 0, 1, 2
SEEDS=($((1000 * SEED)) $((1000 * SEED + 1)) $((1000 * SEED + 2)))
# (a typo in the variant stops the run here, with zoo's one-line error, before anything is written)
"$ZOO" fit --config "$EXPERIMENT" "${FIT[@]}" "${VARIANT[@]}" --print_config > /dev/null
steps=()
[[ -n "${STEPS:-}" ]] && steps=(--set "trainer.max_steps=$STEPS" --set "trainer.val_check_interval=$STEPS")

timed() {  # label, command...
  local label=$1 start=$SECONDS
  shift
  "$@" > "$OUT/$label.log" 2>&1 || { echo "$label failed, see $OUT/$label.log"; tail -5 "$OUT/$label.log"; exit 1; }
  echo "$label: $((SECONDS - start)) s"
}

run_options() {  # `zoo fit` options (--key value, --key=value, --config FILE) as `zoo run`'s, NUL-separated
  while [[ $# -gt 0 ]]; do
    case $1 in
      --config) printf '%s\0' --config "$2"; shift 2 ;;
      --config=*) printf '%s\0' --config "${1#--config=}"; shift ;;
      --*=*) printf '%s\0' --set "${1#--}"; shift ;;
      --*) [[ $# -ge 2 ]] || { echo "the zoo fit option $1 has no value" >&2; return 2; }
        printf '%s\0' --set "${1#--}=$2"; shift 2 ;;
      *) echo "cannot read the zoo fit option $1" >&2; return 2 ;;
    esac
  done
}

reference() {  # ad|ed, collect config, `zoo fit` options of the kind (beside the experiment's)
  local kind=$1 collect=$2 start=$SECONDS options=()
  shift 2
  if [[ $STAGE != evaluate ]]; then
    rm -rf "${OUT:?}/$kind"
    timed "$kind-collect" "$ZOO" collect --config "$collect" --overwrite --no_progress
    run_options "${FIT[@]}" "$@" "${VARIANT[@]}" > "$OUT/$kind-options" || exit 2
    mapfile -d '' options < "$OUT/$kind-options"
    local test=()
    [[ $STAGE == fit ]] && test=(--no_test)
    # fit, choose on the validation tasks, play the held-out split under each evaluation seed
    # (unless STAGE=fit), write the record: one command, the one a sweep trial runs
    timed "$kind-run" "$ZOO" run --config "$EXPERIMENT" "${options[@]}" "${steps[@]}" \
      --set trainer.enable_progress_bar=false \
      --protocol "$PROTOCOL" --seed "$SEED" --out "$OUT/$kind" "${test[@]}"
    grep -E '^(budget|trained|lockbox|record)' "$OUT/$kind-run.log" | sed "s/^/$kind: /"
  fi
  [[ $STAGE == fit ]] && return
  if [[ $STAGE == evaluate ]]; then  # a screened run's chosen checkpoint, played now
    local selected
    selected=$(ls "$OUT/$kind"/selected/step*.ckpt 2> /dev/null | head -1) || true
    [[ -n $selected ]] || {
      echo "no selected checkpoint in $OUT/$kind/selected: fit it first (STAGE=fit)" >&2
      exit 1
    }
    echo "$kind: selected on validation tasks: $(basename "$selected")"
    for seed in "${SEEDS[@]}"; do
      timed "$kind-evaluate-$seed" "$ZOO" evaluate "$selected" --mode stream "${EVAL[@]}" \
        --seed "$seed" --out "$OUT/$kind/eval-$seed"
    done
  fi
  echo "$kind total: $((SECONDS - start)) s"
  "$PY" bench/reference_score.py "$FAMILY" "$kind" "$OUT" --final "$FINAL" --seeds "${SEEDS[@]}"
}

mkdir -p "$OUT"
[[ ${#FIT[@]} -gt 0 ]] && echo "$FAMILY's member: ${FIT[*]}"
[[ ${#VARIANT[@]} -gt 0 ]] && echo "variant: ${VARIANT[*]}"
[[ $WHICH == ad || $WHICH == both ]] && reference ad "configs/collect/$FAMILY.yaml"
[[ $WHICH == ed || $WHICH == both ]] && reference ed "$ED_COLLECT" "${ED_FIT[@]}"
exit 0
