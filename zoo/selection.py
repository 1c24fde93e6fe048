"""Checkpoint selection on the validation tasks at several training budgets, from one run.

A run that trains to a cap of `max_steps` answers more than one question: what would it have chosen
had it been given only 1500 steps, or 3000? `BudgetCheckpoints` keeps, for every budget `b`, the
checkpoint with the best validation return among the validations at or before step `b` (the same
rule `ModelCheckpoint(monitor=..., mode="max")` applies to the whole run), so the rankings at
several budgets come from the same runs and never from a look at the test split. Under a schedule
whose learning rate does not depend on the cap (warm-up then constant: `model.min_lr_ratio: 1`),
the checkpoint within budget `b` is what a run of `b` steps would have chosen.

Checkpoints are shared between budgets (a best step below several budgets is written once); files
no budget points at any more are removed. The validation curve (step, value) is kept too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class BudgetCheckpoints(pl.Callback):
    """The best-`monitor` checkpoint within each training budget, in `dirpath/step<N>.ckpt`."""

    def __init__(self, dirpath: str | Path, budgets: list[int], *, monitor: str) -> None:
        """
        Args:
            dirpath: folder of the kept checkpoints.
            budgets: training-step budgets (e.g. `[1500, 3000, 6000]`); the run's own cap is
                added at the start of training if it is not among them.
            monitor: the validation metric, higher is better (`val/return_final`).
        """
        super().__init__()
        if any(b < 1 for b in budgets):
            raise ValueError(f"budgets must be >= 1 step, got {budgets}")
        self.dirpath = Path(dirpath)
        self.budgets = sorted(set(budgets))
        self.monitor = monitor
        self.curve: list[tuple[int, float]] = []
        """(global step, value) of every validation, in order."""
        self.best: dict[int, tuple[int, float]] = {}
        """Per budget: (step, value) of its best validation so far."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.max_steps > 0 and trainer.max_steps not in self.budgets:
            self.budgets = sorted({*self.budgets, trainer.max_steps})

    def path(self, step: int) -> Path:
        return self.dirpath / f"step{step}.ckpt"

    def selected(self) -> dict[int, dict[str, Any]]:
        """Per budget: its chosen `step`, `value` and `checkpoint` path (budgets no validation
        reached are absent)."""
        return {
            b: {"step": s, "value": v, "checkpoint": str(self.path(s))}
            for b, (s, v) in sorted(self.best.items())
        }

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        step, value = trainer.global_step, float(trainer.callback_metrics[self.monitor])
        self.curve.append((step, value))
        improved = [
            b for b in self.budgets if step <= b and (b not in self.best or value > self.best[b][1])
        ]
        if not improved:
            return
        kept = {s for s, _ in self.best.values()}
        for b in improved:
            self.best[b] = (step, value)
        trainer.save_checkpoint(self.path(step))  # after the update: its state says so
        if trainer.is_global_zero:
            for old in kept - {s for s, _ in self.best.values()}:
                self.path(old).unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "best": self.best, "budgets": self.budgets}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = [(int(s), float(v)) for s, v in state_dict["curve"]]
        self.best = {int(b): (int(s), float(v)) for b, (s, v) in state_dict["best"].items()}
        self.budgets = sorted({*self.budgets, *state_dict["budgets"]})
