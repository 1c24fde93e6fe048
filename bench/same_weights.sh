#!/usr/bin/env bash
# Does a change train the same weights? A tiny `zoo fit` of each named member by two checkouts'
# code (this environment, one thread, 6 steps on a 6-goal Dark Room set), every tensor of the two
# last.ckpt compared bit for bit. For a refactor that must not move a committed trial's numbers
# (the study's workers import the library per trial).
#   git worktree add /tmp/before COMMIT
#   bench/same_weights.sh /tmp/before . transformer mamba gated_deltanet
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
a=$(cd "${1:?usage: bench/same_weights.sh CHECKOUT_A CHECKOUT_B MEMBER...}" && pwd)
b=$(cd "${2:?usage: bench/same_weights.sh CHECKOUT_A CHECKOUT_B MEMBER...}" && pwd)
shift 2
[ $# -gt 0 ] || { echo "bench/same_weights.sh: name at least one member (zoo backbones)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PYTHONPATH=$a $PY -P -m cli collect --env darkroom --num_tasks 6 --episodes 4 --no_progress \
  --output "$work/data" > /dev/null
status=0
for member in "$@"; do
  for side in a b; do
    tree=$a; [ $side = b ] && tree=$b
    (cd "$tree" && OMP_NUM_THREADS=1 PYTHONPATH=$tree $PY -P -m cli fit --data.path="$work/data" \
      --data.context_episodes=1 --data.batch_size=4 --data.val_windows=8 \
      --model.backbone="configs/backbone/$member-tiny.yaml" --model.warmup_steps=1 \
      --trainer.max_steps=6 --trainer.val_check_interval=3 --trainer.num_sanity_val_steps=0 \
      --trainer.enable_progress_bar=false --trainer.enable_model_summary=false \
      --trainer.logger=false --trainer.default_root_dir="$work/$side-$member" > "$work/$side-$member.log" 2>&1) ||
      { echo "$member: the fit by $tree failed: $(tail -1 "$work/$side-$member.log")"; status=1; continue 2; }
  done
  $PY - "$work" "$member" <<'PY' || status=1
import sys
from pathlib import Path

import torch

work, member = Path(sys.argv[1]), sys.argv[2]
a, b = (
    torch.load(next((work / f"{s}-{member}").glob("**/last.ckpt")), weights_only=True)["state_dict"]
    for s in "ab"
)
differ = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))
print(f"{member}: " + (f"the same weights ({len(a)} tensors)" if not differ else f"DIFFERENT in {differ[:5]}"))
sys.exit(1 if differ else 0)
PY
done
exit $status
