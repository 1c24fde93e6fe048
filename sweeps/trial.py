"""One sweep trial: `zoo fit` then `zoo evaluate`, in a child process of the sweep worker.

The child builds everything through the same LightningCLI as `zoo fit` (no second way to build a
model), selects its checkpoint on the validation goals, and plays the test goals with it through
the same code as `zoo evaluate`. A child process per trial gives each trial its own peak memory
reading and keeps a crashing trial from taking the worker down; it dies with its worker
(PR_SET_PDEATHSIG), so a killed worker leaves only a stale trial, which the heartbeat fails and
re-queues. The child never talks to the study: it writes its validation returns by global step to
a file, and the worker, which owns the trial, reports them through Optuna's public API and stops
the child when the pruner says so.

    python -m sweeps.trial SPEC.json    (what the worker runs; SPEC is written by `run_trial`)
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna

INTERMEDIATE = "intermediate.txt"
"""File in a trial's run directory: one `step value` line per validation, written by the child."""


@dataclasses.dataclass
class EvaluationSettings:
    """How every trial selects its checkpoint (validation tasks) and is scored (test tasks).

    During training, at every validation (`--trainer.val_check_interval`), the learner plays the
    run's validation tasks in context (training-distribution tasks whose histories it never
    trained on); the checkpoint with the best `val/return_final` is kept, training stops after
    `patience` validations without improvement (or at `--trainer.max_steps`), and the pruner
    reads the same number. Then, once, the kept checkpoint plays the held-out `split` (`test`, or
    `ood`) under every seed of `seeds`."""

    tasks: int | None = None
    """Held-out tasks, one sub-env each; None: every task of `split` exactly once per seed."""
    split: Literal["test", "ood"] = "test"
    """The held-out split the selected checkpoint plays: `test` (the training distribution's
    held-out tasks), or `ood` for families that define it (bandit)."""
    episodes: int = 20
    """In-context episodes per task (validation and test)."""
    mode: Literal["stream", "window"] = "stream"
    """Context mode: `stream` (state carried) or `window` (fresh forward over the last steps)."""
    final_episodes: int = 5
    """Episodes averaged into the final return."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    """Evaluation seeds of the test play (task order, env and action sampling)."""
    val_repeats: int = 4
    """Every validation goal is played this many times at each validation (other action samples,
    in one vectorised env, so for about the time of one): a less noisy selection signal."""
    patience: int = 0
    """Validations without a better `val/return_final` before training stops; 0: never stop
    early (train to `--trainer.max_steps`)."""
    test: bool = True
    """Play the held-out split with the selected checkpoint; false for tuning, whose objective is the
    best validation return (tuning never sees a test task)."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("evaluation.seeds must list at least one seed")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError(f"evaluation.tasks must be >= 1 (or null), got {self.tasks}")
        if self.val_repeats < 1:
            raise ValueError(f"evaluation.val_repeats must be >= 1, got {self.val_repeats}")
        if self.patience < 0:
            raise ValueError(f"evaluation.patience must be >= 0, got {self.patience}")


def run_trial(
    trial: optuna.Trial,
    *,
    experiment: str,
    backbone_preset: str,
    context_episodes: float,
    seed: int,
    overrides: Sequence[str | Mapping[str, Any]] = (),
    evaluation: EvaluationSettings,
    runs_dir: str,
) -> float:
    """Train and evaluate one configuration in a child process; its objective (the final
    in-context return on the test tasks, or the best validation return when `evaluation.test`
    is false). The child trains what `zoo fit` would on these configs, in this order: the
    experiment, the backbone's preset, the trial's context and seed, its run directory, then
    `overrides` (config files such as tuned settings, and mappings such as a study's `fit:`)."""
    run_dir = Path(runs_dir) / trial.study.study_name / f"trial-{trial.number:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # each trial logs into its own directory: concurrent trials never share a logger's versions
    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(run_dir), "name": "csv", "version": 0},
    }
    configs: list[str | Mapping[str, Any]] = [
        experiment,
        {
            "model": {"backbone": str(backbone_preset)},  # a preset file, as experiments name it
            "data": {"context_episodes": context_episodes},
            "seed_everything": seed,
        },
        {"trainer": {"default_root_dir": str(run_dir), "logger": logger}},
        *overrides,
    ]
    spec = {
        "configs": configs,
        "evaluation": dataclasses.asdict(evaluation),
        "run_dir": str(run_dir),
    }
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    trial.set_user_attr("run_dir", str(run_dir))
    started = time.monotonic()
    log_path = run_dir / "trial.log"
    reports = run_dir / INTERMEDIATE
    reports.unlink(missing_ok=True)
    pruned_at = None
    with log_path.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "sweeps.trial", str(run_dir / "spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        # this process owns the trial: the child writes its validation returns to a file, this
        # loop reports them to the study and stops the child when the pruner says so
        seen = 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            values = _intermediate(reports)
            for step, value in values[seen:]:
                trial.report(value, step)
                if pruned_at is None and trial.should_prune():
                    pruned_at = step
                    child.terminate()
            seen = len(values)
            if pid:
                break
            time.sleep(0.5)
    code = os.waitstatus_to_exitcode(status)
    trial.set_user_attr("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))
    trial.set_user_attr("wall_seconds", round(time.monotonic() - started, 1))
    if pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at step {pruned_at} on its validation return")
    result_path = run_dir / "result.json"
    if code != 0 or not result_path.is_file():
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        raise RuntimeError(f"trial exited with code {code}: {last} (log: {log_path})")
    result = json.loads(result_path.read_text())
    for key, value in result["attrs"].items():
        trial.set_user_attr(key, value)
    return float(result["attrs"]["objective"])


def _intermediate(path: Path) -> list[tuple[int, float]]:
    """The (step, validation return) lines the child has written so far (a line being written is
    not read until it is complete)."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece has no newline yet
    return [(int(step), float(value)) for step, value in (line.split() for line in lines)]


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGKILL when the worker that started it dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# ----------------------------------------------------------------------------- the child process
def _child(spec_path: str) -> int:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from backbones import count_parameters
    from zoo.checkpoints import read_checkpoint
    from zoo.evaluation import InContextEvaluation
    from zoo.training import build, callbacks_of

    spec = json.loads(Path(spec_path).read_text())
    settings = EvaluationSettings(**spec["evaluation"])
    run_dir = Path(spec["run_dir"])
    monitor = "val/return_final"

    class Report(pl.Callback):
        """Training throughput; the validation return, by step, for the worker's pruner."""

        def __init__(self) -> None:
            self.train_seconds, self.tokens, self._start = 0.0, 0, 0.0

        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(
            self,
            trainer: pl.Trainer,
            pl_module: pl.LightningModule,
            outputs: Any,
            batch: Any,
            batch_idx: int,
        ) -> None:
            self.train_seconds += time.perf_counter() - self._start
            self.tokens += int(batch["actions"].numel())

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking or monitor not in trainer.callback_metrics:
                return
            value = float(trainer.callback_metrics[monitor])
            with (run_dir / INTERMEDIATE).open("a") as out:
                out.write(f"{trainer.global_step} {value!r}\n")

    cli = build(spec["configs"])  # an attention window follows the data's context by itself
    # the trial's `zoo fit` config as one file (before the trial swaps in its own selection
    # callbacks): `zoo fit --config <it> --trainer.default_root_dir <elsewhere>` trains the same
    # model on the same data with the same seed
    fit_config = run_dir / "fit.yaml"
    fit_config.write_text(cli.parser.dump(cli.config, skip_none=False))
    if len(cli.datamodule.val_tasks) == 0:
        raise ValueError("sweep trials select on validation tasks: data.val_fraction must be > 0")
    # the study decides how trials are evaluated: the experiment's own evaluation is replaced
    callbacks = [c for c in callbacks_of(cli.trainer) if not isinstance(c, InContextEvaluation)]
    report = Report()
    selected = ModelCheckpoint(
        dirpath=run_dir / "selected",
        monitor=monitor,
        mode="max",
        filename="step{step}",
        auto_insert_metric_name=False,
        save_top_k=1,
    )
    callbacks += [
        InContextEvaluation(
            episodes=settings.episodes,
            mode=settings.mode,
            split="val",
            final_episodes=settings.final_episodes,
            repeats=settings.val_repeats,
        ),
        report,
        *(
            [EarlyStopping(monitor=monitor, mode="max", patience=settings.patience)]
            if settings.patience
            else []
        ),
        selected,
    ]
    callbacks_of(cli.trainer)[:] = callbacks
    cli.trainer.fit(cli.model, cli.datamodule)
    max_steps = cli.trainer.max_steps
    steps = cli.trainer.global_step
    checkpoint = selected.best_model_path
    if not checkpoint:  # no validation ran: the weights at the end are the choice
        checkpoint = str(run_dir / "selected" / f"step{steps}.ckpt")
        cli.trainer.save_checkpoint(checkpoint)
    best_step = int(read_checkpoint(checkpoint)["global_step"])
    score = selected.best_model_score
    attrs: dict[str, Any] = {
        "val_return_final": None if score is None else float(score),
        "selected_step": best_step,
        "steps_trained": steps,
        "max_steps": max_steps,
        # the run ended at its step budget, not because validation stopped improving
        "budget_capped": bool(max_steps > 0 and steps >= max_steps),
        "parameters": count_parameters(cli.model.backbone),
        "parameters_total": count_parameters(cli.model),
        "train_tokens_per_s": round(report.tokens / max(report.train_seconds, 1e-9), 1),
        "global_step": steps,
        "checkpoint": checkpoint,
        "fit_command": f"zoo fit --config {fit_config}",
    }
    attrs["objective"] = attrs["val_return_final"]
    if settings.test:
        attrs.update(_play_test(checkpoint, settings, run_dir))
        attrs["objective"] = attrs["return_final"]
    if torch.cuda.is_available():
        attrs["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (run_dir / "result.json").write_text(json.dumps({"attrs": attrs}, indent=1) + "\n")
    return 0


def _play_test(checkpoint: str, settings: EvaluationSettings, run_dir: Path) -> dict[str, Any]:
    """The selected checkpoint on the held-out split (`settings.split`), once per evaluation seed: summaries over every
    (seed, task) pair, per-seed final returns, the curves, the source learner on the same tasks."""
    import numpy as np

    from zoo.evaluation import Evaluation, evaluate_checkpoint, summarise, write_outputs

    returns, optimal, source, finals, seconds, steps = [], [], [], [], 0.0, 0
    source_learner = None
    for seed in settings.seeds:
        evaluation = Evaluation(
            episodes=settings.episodes,
            tasks=settings.tasks,
            mode=settings.mode,
            split=settings.split,
            final_episodes=settings.final_episodes,
            seed=seed,
        )
        result = evaluate_checkpoint(checkpoint, evaluation)
        write_outputs(result, run_dir / f"test-seed{seed}")
        returns.append(np.asarray(result["returns"]))
        optimal.append(np.asarray(result["optimal"]))
        finals.append(result["summary"]["return_final"])
        seconds += result["seconds"]
        steps += result["env_steps"]
        if result["source"]:
            source_learner = result["source"]["learner"]
            source.append(np.asarray(result["source"]["returns"]))
    every, best = np.concatenate(returns), np.concatenate(optimal)
    attrs: dict[str, Any] = {
        **summarise(every, best, final_episodes=settings.final_episodes),
        "curve": every.mean(0).tolist(),
        "test_tasks": len(returns[0]),
        "test_split": settings.split,
        "eval_seeds": list(settings.seeds),
        "return_final_by_seed": finals,
        "eval_steps_per_s": round(steps / max(seconds, 1e-9), 1),
        "eval_dir": str(run_dir / f"test-seed{settings.seeds[0]}"),
        "evaluate_command": (
            f"zoo evaluate {checkpoint} --split {settings.split} --episodes {settings.episodes} "
            f"--mode {settings.mode} --final_episodes {settings.final_episodes} "
            + (f"--tasks {settings.tasks} " if settings.tasks else "")
            + f"--seed <each of {' '.join(map(str, settings.seeds))}>"
        ),
    }
    if source:
        curves = np.concatenate(source)
        attrs["source_learner"] = source_learner
        attrs["source_curve"] = curves.mean(0).tolist()
        attrs["source_return_final"] = summarise(
            curves, best, final_episodes=settings.final_episodes
        )["return_final"]
    return attrs


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
