#!/usr/bin/env bash
# The Dark Room reference result: Algorithm Distillation improves in context on held-out goals with
# frozen weights, Expert Distillation (the same model on optimal episodes only) does not.
#   AD: collect learning histories -> fit (transformer) -> evaluate 40 in-context episodes on
#       held-out goals; ED: collect expert episodes -> fit -> evaluate the same way.
# Prints each stage's wall time, the mean held-out return per episode and the fraction of optimal.
# Target (2-core CPU, AD alone <= 15 min): AD's return rises and ends >= 80% of optimal, ED <= 50%.
# Usage: bench/darkroom_reference.sh [ad|ed|both]   (env: STEPS=<n> for a quick smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
WHICH=${1:-both}
OUT=runs/reference
# every one of Dark Room's 16 held-out goals exactly once (the default), under evaluation seeds
# 0, 1 and 2, played by the checkpoint chosen on the validation goals (never on test goals)
EVAL=(--episodes 40 --mode stream)
SEEDS=(0 1 2)
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
  timed "$kind-fit" "$ZOO" fit --config configs/experiments/darkroom.yaml "$@" \
    --trainer.default_root_dir "$OUT/$kind" --trainer.logger false \
    --trainer.enable_progress_bar false "${steps[@]}"
  local selected
  selected=$(ls "$OUT/$kind"/checkpoints/selected-step*.ckpt)
  echo "$kind: selected on validation goals: $(basename "$selected")"
  for seed in "${SEEDS[@]}"; do
    timed "$kind-evaluate-$seed" "$ZOO" evaluate "$selected" "${EVAL[@]}" \
      --seed "$seed" --out "$OUT/$kind/eval-$seed"
  done
  echo "$kind total: $((SECONDS - start)) s"
  "$PY" - "$kind" "$OUT/$kind"/eval-*/returns.json <<'PY'
import json, sys
import numpy as np
kind, results = sys.argv[1], [json.load(open(p)) for p in sys.argv[2:]]
for result in results:
    curve = np.asarray(result["returns"]).mean(0)
    optimal = float(np.mean(result["optimal"]))
    s = result["summary"]
    print(f"{kind}, evaluation seed {result['seed']}: held-out return by episode (mean of "
          f"{len(result['returns'])} tasks, {result['mode']}, optimal {optimal:.2f}):")
    print("  " + "  ".join(f"ep{k}={curve[k - 1]:.2f}" for k in (1, 2, 5, 10, 20, 30, 40)))
    print(f"  final (last 5) {s['return_final']:.2f} = {s['fraction_optimal']:.1%} of optimal, "
          f"auc {s['auc']:.2f}")
    if result["source"]:
        source = np.asarray(result["source"]["returns"]).mean(0)
        reach = np.flatnonzero(source >= 0.8 * optimal)
        print(f"  source learner on the same tasks: ep1={source[0]:.2f} ep40={source[-1]:.2f}, "
              f"first episode >= 80% of optimal: {reach[0] + 1 if len(reach) else 'never'}")
fractions = [r["summary"]["fraction_optimal"] for r in results]
print(f"{kind}: final return {np.mean(fractions):.1%} of optimal on average over "
      f"{len(results)} evaluation seeds ({', '.join(f'{f:.1%}' for f in fractions)})")
PY
}

mkdir -p "$OUT"
# one experiment, AD by default; ED by its data-mode switch, on the expert dataset
[[ $WHICH == ad || $WHICH == both ]] && reference ad configs/collect/darkroom.yaml
[[ $WHICH == ed || $WHICH == both ]] && reference ed configs/collect/darkroom_expert.yaml \
  --data.mode ed --data.path data/darkroom_expert
exit 0
