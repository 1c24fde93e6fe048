"""The validation score a `zoo fit` run selected its checkpoint by, for comparing runs (variants,
seeds) on validation tasks only, without playing a test task.

Reads each run's `checkpoints/last.ckpt`: the state of its `ModelCheckpoint(monitor=...)`, i.e.
the best value of the monitored validation metric (`val/return_final` in the experiments), the
checkpoint that holds it, and the steps trained.

    python bench/val_score.py runs/exp/a runs/exp/b ...      # one line per run
    python bench/val_score.py --monitor val/auc RUN ...
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any

from zoo.checkpoints import read_checkpoint
from zoo.errors import CheckpointError


def selection(run: Path, monitor: str) -> dict[str, Any]:
    """`{"score", "selected", "steps"}` of one run directory (or of its last.ckpt)."""
    last = run if run.is_file() else run / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint(last)
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not key.startswith("ModelCheckpoint"):
            continue
        settings = ast.literal_eval(key[len("ModelCheckpoint") :])  # the callback's state key
        if settings.get("monitor") != monitor or state.get("best_model_score") is None:
            continue
        best = Path(state["best_model_path"]).name
        step = re.search(r"step(\d+)", best)
        return {
            "score": float(state["best_model_score"]),
            "selected": int(step.group(1)) if step else best,
            "steps": int(checkpoint["global_step"]),
        }
    raise CheckpointError(
        f"{last}: no ModelCheckpoint monitoring {monitor!r} with a score (a run without "
        "validation, or another --monitor)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (or last.ckpt files)")
    parser.add_argument("--monitor", default="val/return_final")
    args = parser.parse_args(argv)
    for run in args.runs:
        try:
            found = selection(run, args.monitor)
        except CheckpointError as error:
            sys.exit(str(error))
        print(
            f"{run}: best {args.monitor} {found['score']:.3f} at step {found['selected']} "
            f"of {found['steps']}"
        )


if __name__ == "__main__":
    main()
