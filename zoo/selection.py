"""Checkpoint selection on the validation tasks at several training budgets, from one run.

A run that trains to a cap of `max_steps` answers more than one question: what would it have chosen
had it been given only 1500 steps, or 3000? `BudgetCheckpoints` keeps, for every budget `b`, the
checkpoint with the best validation return among the validations at or before step `b` (the same
rule `ModelCheckpoint(monitor=..., mode="max")` applies to the whole run), so the rankings at
several budgets come from the same runs and never from a look at the test split. Under a schedule
whose learning rate does not depend on the cap (warm-up then constant: `model.min_lr_ratio: 1`),
the checkpoint within budget `b` is what a run of `b` steps would have chosen.

Under warm-up-stable-decay (`model.schedule: wsd`, `cooldown` c) a run of `b` steps is the
longer run up to `b * (1 - c)` (the stable rate does not depend on the length) and then its own
decay. So with `cooldown` given, the validations of the long run count for budget `b` only up to
that step, where a branch checkpoint is written (`branch-step<N>.ckpt`, see `branches`); the
branch, trained from it to `b` under its own decay (`sweeps.trial` does it), adds its validations
(`merge`).

Checkpoints are shared between budgets (a best step below several budgets is written once); files
no budget points at any more are removed. The validation curve (step, value) is kept too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class BudgetCheckpoints(pl.Callback):
    """The best-`monitor` checkpoint within each training budget, in `dirpath/step<N>.ckpt`."""

    def __init__(
        self,
        dirpath: str | Path,
        budgets: list[int],
        *,
        monitor: str,
        cooldown: float | None = None,
    ) -> None:
        """
        Args:
            dirpath: folder of the kept checkpoints.
            budgets: training-step budgets (e.g. `[1500, 3000, 6000]`); the run's own cap is
                added at the start of training if it is not among them.
            monitor: the validation metric, higher is better (`val/return_final`).
            cooldown: the run's `wsd` cooldown fraction (`model.cooldown`), None under a schedule
                that does not depend on the run's length: budgets below the cap then count
                validations up to their branch point only, and a checkpoint is written there.
        """
        super().__init__()
        if any(b < 1 for b in budgets):
            raise ValueError(f"budgets must be >= 1 step, got {budgets}")
        if cooldown is not None and not 0 < cooldown <= 1:
            raise ValueError(f"cooldown must be in (0, 1], got {cooldown}")
        self.dirpath = Path(dirpath)
        self.budgets = sorted(set(budgets))
        self.monitor = monitor
        self.cooldown = cooldown
        self.cap: int | None = None
        self.curve: list[tuple[int, float]] = []
        """(global step, value) of every validation, in order."""
        self.best: dict[int, tuple[int, float]] = {}
        """Per budget: (step, value) of its best validation so far."""

    @property
    def state_key(self) -> str:  # a branch's own callback does not take its trunk's state
        return self._generate_state_key(dirpath=str(self.dirpath))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.max_steps > 0:
            self.cap = trainer.max_steps
            beyond = [b for b in self.budgets if b > self.cap]
            if beyond:  # a run of the cap's length cannot answer for more steps than it trains
                print(f"BudgetCheckpoints: budgets {beyond} are beyond the run's {self.cap} steps")
            self.budgets = sorted({*(b for b in self.budgets if b <= self.cap), self.cap})
            short = [b for b in self.branches() if self.last_counted(b) < 1]
            if short:
                raise ValueError(
                    f"budgets {short} are too short for a decay of {self.cooldown} of the run: "
                    "their branch would start before the first step"
                )

    def path(self, step: int) -> Path:
        return self.dirpath / f"step{step}.ckpt"

    def last_counted(self, budget: int) -> int:
        """The last step whose validation counts for `budget`: the budget itself, or under `wsd`
        its branch point (the cap's own run decays to the cap)."""
        if self.cooldown is None or budget == self.cap:
            return budget
        from zoo.schedules import decay_start

        return decay_start(budget, self.cooldown)

    def branches(self) -> dict[int, Path]:
        """Under `wsd`: per budget below the cap, the checkpoint its decay branch starts from
        (`branch-step<N>.ckpt`, written when training passes step N); empty otherwise."""
        if self.cooldown is None:
            return {}
        return {
            b: self.dirpath / f"branch-step{self.last_counted(b)}.ckpt"
            for b in self.budgets
            if b != self.cap
        }

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._validates_now(trainer):
            return  # written after this step's validation, as a run stopped there would be
        self._write_branch_point(trainer)

    def _write_branch_point(self, trainer: pl.Trainer) -> None:
        for path in set(self.branches().values()):
            if path.name == f"branch-step{trainer.global_step}.ckpt" and not path.is_file():
                trainer.save_checkpoint(path)

    @staticmethod
    def _validates_now(trainer: pl.Trainer) -> bool:
        """Whether a validation follows the step just taken (validation every
        `val_check_interval` steps across epochs, as the zoo trains)."""
        every = getattr(trainer, "val_check_batch", None)
        return (
            getattr(trainer, "check_val_every_n_epoch", 1) is None
            and isinstance(every, int)
            and every > 0
            and trainer.global_step % every == 0
            and getattr(trainer, "limit_val_batches", 1) != 0
        )

    def selected(self) -> dict[int, dict[str, Any]]:
        """Per budget: its chosen `step`, `value` and `checkpoint` path (budgets no validation
        reached are absent)."""
        return {
            b: {"step": s, "value": v, "checkpoint": str(self.path(s))}
            for b, (s, v) in sorted(self.best.items())
        }

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        state = getattr(trainer, "state", None)
        if state is not None and state.fn == "fit":
            self._write_branch_point(trainer)  # a branch point on a validation step: after it
        if self.monitor not in trainer.callback_metrics:
            return
        step, value = trainer.global_step, float(trainer.callback_metrics[self.monitor])
        self.curve.append((step, value))
        if math.isnan(value):  # never a choice (and never blocking a later one)
            return
        improved = [
            b
            for b in self.budgets
            if step <= self.last_counted(b) and (b not in self.best or value > self.best[b][1])
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


def merge(trunk: dict[str, Any] | None, branch: dict[str, Any] | None) -> dict[str, Any] | None:
    """A budget's choice from its trunk's (validations up to the branch point) and its decay
    branch's (`BudgetCheckpoints.selected()` entries): the better validation, the earlier on a
    tie; either may be missing (a branch point no validation preceded, a branch not run)."""
    if trunk is None or trunk["value"] is None:
        return branch or trunk
    if branch is None or branch["value"] is None or branch["value"] <= trunk["value"]:
        return trunk
    return branch
