#!/usr/bin/env bash
# A family's reference result: Algorithm Distillation improves in context on held-out tasks with
# frozen weights, Expert Distillation (the same model on expert episodes only) does not.
#   AD: collect learning histories -> fit (the family's experiment) -> evaluate on held-out tasks
#       (every one once, or a fixed sample where tasks are continuous) under evaluation seeds 0-2,
#       played by the checkpoint chosen on the validation tasks (never on held-out ones), beside
#       the source learner on the same tasks;
#   ED: the same experiment in ED mode, evaluated the same way.
# Prints each stage's wall time, the in-context curve's key points and the family's score:
#   darkroom, key_to_door: final return (last 5 episodes) as a fraction of optimal;
#   darkroom_hard: final success rate (return 1 = goal reached);
#   bandit (ood split): (r - r_random) / (r_UCB - r_random) at the end of the history, UCB being
#     the source learner on the same bandits, r the mean reward of the last 20 pulls.
# Targets and measured results: BENCHMARKS.md ("Dark Room reference run", "Reference runs of the
# other families").
# Usage: bench/reference.sh FAMILY [ad|ed|both] [-- ZOO FIT OPTIONS]
#   FAMILY: darkroom key_to_door darkroom_hard bandit; options after `--` go to both fits (a
#   variant of the experiment, e.g. `-- --data.context_episodes 16 --model.label_smoothing 0.2`)
#   env: STEPS=<n> for a quick smoke run (fit n steps, validate once); OUT=<dir> for the outputs
#   (default runs/reference/FAMILY: a variant's run belongs in its own)
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
FAMILY=${1:?usage: bench/reference.sh FAMILY [ad|ed|both] [-- ZOO FIT OPTIONS]}
WHICH=${2:-both}
shift $(($# < 2 ? $# : 2))
VARIANT=()
if [[ $# -gt 0 ]]; then
  [[ $1 == -- ]] || { echo "options for zoo fit go after --, got $1" >&2; exit 2; }
  shift
  VARIANT=("$@")
fi
SEEDS=(0 1 2)
FINAL=5

# What differs between families: the held-out tasks and history length of the evaluation, and
# ED's expert dataset (the optimal policy on the AD data's tasks: configs/collect/<family>_expert.yaml).
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
steps=()
[[ -n "${STEPS:-}" ]] && steps=(--trainer.max_steps "$STEPS" --trainer.val_check_interval "$STEPS")

timed() {  # label, command...
  local label=$1 start=$SECONDS
  shift
  "$@" > "$OUT/$label.log" 2>&1 || { echo "$label failed, see $OUT/$label.log"; tail -5 "$OUT/$label.log"; exit 1; }
  echo "$label: $((SECONDS - start)) s"
}

reference() {  # ad|ed, collect config, `zoo fit` options of the kind (beside the experiment's)
  local kind=$1 collect=$2 start=$SECONDS
  shift 2
  rm -rf "${OUT:?}/$kind"
  timed "$kind-collect" "$ZOO" collect --config "$collect" --overwrite --no_progress
  timed "$kind-fit" "$ZOO" fit --config "$EXPERIMENT" "$@" "${VARIANT[@]}" \
    --trainer.default_root_dir "$OUT/$kind" --trainer.logger false \
    --trainer.enable_progress_bar false "${steps[@]}"
  local selected
  selected=$(ls "$OUT/$kind"/checkpoints/selected-step*.ckpt)
  echo "$kind: selected on validation tasks: $(basename "$selected")"
  for seed in "${SEEDS[@]}"; do
    timed "$kind-evaluate-$seed" "$ZOO" evaluate "$selected" --mode stream "${EVAL[@]}" \
      --seed "$seed" --out "$OUT/$kind/eval-$seed"
  done
  echo "$kind total: $((SECONDS - start)) s"
  "$PY" - "$FAMILY" "$kind" "$FINAL" "$OUT" "${SEEDS[@]}" <<'PY'
import json, sys
import numpy as np
family, kind, final, out, seeds = *sys.argv[1:3], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
def returns_of(kind, seed):
    try:
        return json.load(open(f"{out}/{kind}/eval-{seed}/returns.json"))
    except FileNotFoundError as e:
        sys.exit(f"no {kind} evaluation at {e.filename}: run bench/reference.sh {family} {kind}")

results = [returns_of(kind, seed) for seed in seeds]
scores = []
for result in results:
    returns = np.asarray(result["returns"])
    curve, k = returns.mean(0), returns.shape[1]
    optimal = float(np.mean(result["optimal"]))
    points = sorted({1, 2, 5, 10, 20, k // 2, k} & set(range(1, k + 1)))
    print(f"{kind}, evaluation seed {result['seed']}: held-out return by episode (mean of "
          f"{len(returns)} {result['split']} tasks, {result['mode']}, optimal {optimal:.3f}):")
    print("  " + "  ".join(f"ep{p}={curve[p - 1]:.2f}" for p in points))
    ad_final = float(returns[:, -final:].mean())
    source = np.asarray(result["source"]["returns"]) if result["source"] else None
    if family == "bandit":  # normalised to the source (UCB) on the same bandits, 0 = random arm
        # ED's model learnt from no learner: its UCB is the AD run's, on the same seeded bandits
        ucb_of = result if source is not None else returns_of("ad", result["seed"])
        if ucb_of["tasks"] != result["tasks"] or not ucb_of["source"]:
            sys.exit("the bandit score needs UCB on the same bandits: run the ad reference first")
        random = float(np.asarray(result["tasks"]).mean())
        ucb = float(np.asarray(ucb_of["source"]["returns"])[:, k - final : k].mean())
        score = (ad_final - random) / (ucb - random)
        print(f"  last {final} pulls: {ad_final:.3f}; random arm {random:.3f}, "
              f"{ucb_of['source']['learner']} {ucb:.3f}: score {score:.2f} of UCB")
    else:
        score = ad_final / optimal
        print(f"  final (last {final}) {ad_final:.3f} = {score:.1%} of optimal, "
              f"auc {result['summary']['auc']:.3f}")
    scores.append(score)
    if source is not None and family != "bandit":
        reach = np.flatnonzero(source.mean(0) >= 0.8 * optimal)
        print(f"  source learner ({result['source']['learner']}) on the same tasks: "
              f"ep1={source.mean(0)[0]:.2f} ep{source.shape[1]}={source.mean(0)[-1]:.2f}, "
              f"first episode >= 80% of optimal: {reach[0] + 1 if len(reach) else 'never'}")
what = "of UCB" if family == "bandit" else "of optimal"
fmt = (lambda s: f"{s:.2f}") if family == "bandit" else (lambda s: f"{s:.1%}")
print(f"{family} {kind}: final score {fmt(float(np.mean(scores)))} {what} on average over "
      f"{len(scores)} evaluation seeds ({', '.join(fmt(s) for s in scores)})")
PY
}

case $WHICH in ad | ed | both) ;; *) echo "unknown run $WHICH: ad, ed or both" >&2; exit 2 ;; esac
mkdir -p "$OUT"
[[ ${#VARIANT[@]} -gt 0 ]] && echo "variant: ${VARIANT[*]}"
[[ $WHICH == ad || $WHICH == both ]] && reference ad "configs/collect/$FAMILY.yaml"
[[ $WHICH == ed || $WHICH == both ]] && reference ed "$ED_COLLECT" "${ED_FIT[@]}"
exit 0
