"""In-context evaluation: what an evaluation plays (`Evaluation`), the in-training evaluation on
the validation tasks (`InContextEvaluation`, the number every choice reads), and a checkpoint's
evaluation with its files (`zoo evaluate`). The rollout itself: `zoo.rollout`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from datamodules.reader import open_dataset
from datamodules.storage import DatasetError
from envs.base import Split
from zoo.model import InContextLearner, load_learner
from zoo.rollout import (
    CONTEXT_MODES,
    ContextMode,
    EnvMismatchError,
    Rollout,
    check_compatible,
    evaluation_tasks,
    family_of,
    run_in_context,
    source_learning_curves,
    summarise,
)

__all__ = [
    "CONTEXT_MODES",
    "ContextMode",
    "EnvMismatchError",
    "Evaluation",
    "InContextEvaluation",
    "Rollout",
    "check_compatible",
    "evaluate_checkpoint",
    "evaluation_tasks",
    "family_of",
    "plot_curves",
    "run_in_context",
    "source_learning_curves",
    "summarise",
    "write_outputs",
]


@dataclasses.dataclass
class Evaluation:
    """What one in-context evaluation plays: `zoo evaluate`'s settings, the in-training
    callback's (`InContextEvaluation.settings`), and each play of a sweep trial's protocol
    (`sweeps.trial.EvaluationSettings.validation` and `.held_out`)."""

    episodes: int = 20
    """In-context episodes per task (K)."""
    tasks: int | None = None
    """Tasks (N), one sub-env each; None: every task of the split exactly once."""
    mode: ContextMode = "stream"
    """Context mode: `stream` (state carried) or `window` (fresh forward over the last steps)."""
    split: Split = "test"
    """`test` (held out), `val` (the run's validation tasks), `ood`, `train`."""
    final_episodes: int = 5
    """Episodes averaged into the final return."""
    seed: int = 0
    """Seed of the task order, the envs and the action sampling."""
    greedy: bool = False
    """Argmax actions instead of sampling."""
    repeats: int = 1
    """Play every task this many times (other action samples), side by side in the one
    vectorised env: a less noisy number for about the same wall time."""

    def __post_init__(self) -> None:
        for name in ("episodes", "final_episodes", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError(f"tasks must be >= 1 (or null: every task once), got {self.tasks}")
        if self.mode not in CONTEXT_MODES:
            raise ValueError(f"mode must be one of {CONTEXT_MODES}, got {self.mode!r}")

    def command(self, checkpoint: str | Path, *, seed: str | None = None) -> str:
        """The `zoo evaluate` command line that plays these settings with `checkpoint` (`seed`:
        text in place of the seed, e.g. `<each of 0 1 2>`)."""
        words = [f"zoo evaluate {checkpoint} --split {self.split} --episodes {self.episodes}"]
        words += [f"--mode {self.mode} --final_episodes {self.final_episodes}"]
        words += [f"--tasks {self.tasks}"] if self.tasks else []
        words += [f"--repeats {self.repeats}"] if self.repeats > 1 else []
        words += [f"--seed {self.seed if seed is None else seed}"]
        words += ["--greedy"] if self.greedy else []
        return " ".join(words)


class InContextEvaluation(pl.Callback):
    """At every validation (`trainer.val_check_interval`), the learner plays the run's validation
    tasks in context with frozen weights, logged as `val/return_final`, `val/auc`,
    `val/fraction_optimal`, ...: the in-context metric that model selection monitors
    (`ModelCheckpoint(monitor="val/return_final", mode="max")`, `EarlyStopping`, pruners).

    The validation tasks are training-distribution tasks whose histories the run held out of
    training (`data.val_fraction`); the `test` split is for the chosen model, once, at the end
    (`zoo evaluate`). `split: test` is possible, logged as `test/...`, and is model selection on
    the test set if anything reads it."""

    def __init__(
        self,
        *,
        episodes: int = 20,
        tasks: int | None = None,
        mode: ContextMode = "stream",
        split: Split = "val",
        final_episodes: int = 5,
        seed: int = 0,
        repeats: int = 1,
    ) -> None:
        """
        Args:
            episodes: episodes per task.
            tasks: tasks, one sub-env each; None: every task of the split once.
            mode: context mode, `stream` or `window`.
            split: `val` (the run's validation tasks), or a split of the env (`test`, `ood`).
            final_episodes: episodes averaged into `<split>/return_final`.
            seed: seed of the task order, the env and the action sampling (the same at every
                evaluation, so successive evaluations differ only by the weights).
            repeats: play every task this many times (other action samples), side by side in
                the one vectorised env: a less noisy number for about the same wall time.
        """
        super().__init__()
        # the arguments are the YAML's `init_args`; what they say, and its checks, is `Evaluation`
        self.settings = Evaluation(
            episodes=episodes,
            tasks=tasks,
            mode=mode,
            split=split,
            final_episodes=final_episodes,
            seed=seed,
            repeats=repeats,
        )

    @classmethod
    def of(cls, settings: Evaluation) -> InContextEvaluation:
        """The callback that plays `settings` at every validation (sampled, as validation is)."""
        if settings.greedy:
            raise ValueError(
                "the in-training evaluation samples its actions: greedy is for zoo evaluate"
            )
        fields = dataclasses.asdict(settings)
        del fields["greedy"]
        return cls(**fields)

    def evaluate(self, model: InContextLearner) -> dict[str, float]:
        """The summaries of one evaluation of `model`."""
        play = self.settings
        family = family_of(model)
        tasks = evaluation_tasks(model, family, play.split, play.tasks, seed=play.seed)
        tasks = np.repeat(tasks, play.repeats, axis=0)
        rollout = run_in_context(
            model, family, tasks, episodes=play.episodes, mode=play.mode, seed=play.seed
        )
        optimal = family.optimal_return(tasks)
        return summarise(rollout.returns, optimal, final_episodes=play.final_episodes)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        summary = self._evaluate_on_rank_zero(pl_module)
        # every rank logs the same numbers: rank zero's, broadcast
        summary = trainer.strategy.broadcast(summary, src=0)
        assert summary is not None  # rank zero's, on every rank
        # logged as validation metrics: in callback_metrics before ModelCheckpoint and
        # EarlyStopping read them at the end of this validation
        pl_module.log_dict(
            {f"{self.settings.split}/{key}": float(value) for key, value in summary.items()},
            batch_size=1,
        )

    @rank_zero_only
    def _evaluate_on_rank_zero(self, pl_module: pl.LightningModule) -> dict[str, float]:
        if not isinstance(pl_module, InContextLearner):
            raise TypeError(f"InContextEvaluation evaluates an InContextLearner, not {pl_module}")
        return self.evaluate(pl_module)


def evaluate_checkpoint(
    checkpoint: str | Path,
    settings: Evaluation,
    *,
    env: str | None = None,
    source_episodes: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Play `settings` with the frozen learner of `checkpoint`; return everything `returns.json`
    holds. `env`: the env the checkpoint must have been trained on; `source_episodes`: episodes of
    the source learner's curve on the same tasks (None: K x the dataset's keep_every, none
    for an expert dataset; 0: none)."""
    model = load_learner(str(checkpoint), map_location=device)
    family = family_of(model, env=env)
    tasks = evaluation_tasks(model, family, settings.split, settings.tasks, seed=settings.seed)
    tasks = np.repeat(tasks, settings.repeats, axis=0)
    started = time.perf_counter()
    rollout = run_in_context(
        model,
        family,
        tasks,
        episodes=settings.episodes,
        mode=settings.mode,
        seed=settings.seed,
        greedy=settings.greedy,
    )
    seconds = time.perf_counter() - started
    optimal = family.optimal_return(tasks)
    random = family.random_return(tasks)
    result: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "env": model.env,
        "mode": settings.mode,
        "split": settings.split,
        "seed": settings.seed,
        "greedy": settings.greedy,
        "episodes": settings.episodes,
        "final_episodes": settings.final_episodes,
        "repeats": settings.repeats,
        "tasks": tasks.tolist(),
        "optimal": optimal.tolist(),
        "random": None if random is None else random.tolist(),
        "returns": rollout.returns.tolist(),
        "summary": summarise(
            rollout.returns, optimal, final_episodes=settings.final_episodes, random=random
        ),
        "env_steps": int(rollout.observations.size),  # all tasks' steps, played in lock-step
        "seconds": round(seconds, 3),
        "source": None,
    }
    if source_episodes is None:
        try:
            manifest = open_dataset(model.env["dataset"]).manifest
            # an expert dataset's episodes come from no learner: there is no source to show
            keep_every = manifest.keep_every if manifest.mode == "ad" else None
        except (DatasetError, KeyError):
            keep_every = None  # the training data is not here: no source curve by default
        source_episodes = settings.episodes * keep_every if keep_every else 0
    if source_episodes > 0:
        learner, curves = source_learning_curves(
            model, family, tasks, episodes=source_episodes, seed=settings.seed
        )
        result["source"] = {
            "learner": learner,
            "episodes": source_episodes,
            "returns": curves.tolist(),
            "summary": summarise(curves, optimal, final_episodes=settings.final_episodes),
        }
    return result


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """returns.json, returns.csv and curve.png under `out`."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "returns.json").write_text(json.dumps(result, indent=1) + "\n")
    frames = [_long_table(np.asarray(result["returns"]), "in_context")]
    if result["source"]:
        frames.append(_long_table(np.asarray(result["source"]["returns"]), "source"))
    pd.concat(frames).to_csv(out / "returns.csv", index=False)
    plot_curves(result, out / "curve.png")


def _long_table(returns: np.ndarray, curve: str) -> Any:
    import pandas as pd

    tasks, episodes = np.meshgrid(
        np.arange(returns.shape[0]), np.arange(1, returns.shape[1] + 1), indexing="ij"
    )
    return pd.DataFrame(
        {
            "curve": curve,
            "task": tasks.ravel(),
            "episode": episodes.ravel(),
            "return": returns.ravel(),
        }
    )


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """The in-context curve (frozen weights) beside the source learner's, mean and 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("in-context, frozen weights", np.asarray(result["returns"]))]
    if result["source"]:
        name = result["source"]["learner"]
        panels.append((f"source learner ({name})", np.asarray(result["source"]["returns"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    optimal = float(np.mean(result["optimal"]))
    for ax, (title, returns) in zip(axes, panels, strict=True):
        episodes = np.arange(1, returns.shape[1] + 1)
        mean = returns.mean(0)
        half = 1.96 * returns.std(0, ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else 0
        ax.plot(episodes, mean)
        ax.fill_between(episodes, mean - half, mean + half, alpha=0.25)
        ax.axhline(optimal, color="grey", linestyle="--", linewidth=1, label="optimal")
        ax.set_title(title)
        ax.set_xlabel("episode")
    axes[0].set_ylabel(f"return ({len(result['returns'])} {result['split']} tasks)")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"{result['env'].get('name', '')}: {result['mode']} context")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
