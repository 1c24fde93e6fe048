"""The child process of a sweep trial: `zoo fit` with the study's selection, the decay branches of
its budgets, the held-out plays of the chosen checkpoints, and the trial's record.

    python -m sweeps.child SPEC.json    (what `sweeps.trial.run_trial` and `rerun` start)

It builds everything through the same LightningCLI as `zoo fit` (`zoo.training.build`), selects on
the validation tasks only (`zoo.selection.BudgetCheckpoints`), and plays the held-out split
through the same code as `zoo evaluate`. It never talks to the study: it writes its validation
returns by step to `intermediate.txt` (the worker reports them to the pruner), then `record.json`
and `result.json` (the trial's user attributes).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from backbones import count_parameters
from envs import make_family
from sweeps.provenance import code_version
from sweeps.trial import (
    CODE,
    INTERMEDIATE,
    MONITOR,
    RECORD,
    EvaluationSettings,
    _record_head,
    validation_summary,
    write_json,
    yaml_safe,
)
from zoo.evaluation import InContextEvaluation, evaluate_checkpoint, summarise, write_outputs
from zoo.selection import BudgetCheckpoints, merge
from zoo.training import build, callbacks_of


class Report(pl.Callback):
    """Training throughput; the validation return, by step, for the worker's pruner."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
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
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero  # under DDP every rank has the same value
            or MONITOR not in trainer.callback_metrics
        ):
            return
        value = float(trainer.callback_metrics[MONITOR])
        with (self.run_dir / INTERMEDIATE).open("a") as out:
            out.write(f"{trainer.global_step} {value!r}\n")


def main(spec_path: str) -> int:
    """Run the trial `spec_path` describes (`sweeps.trial.run_trial` writes it)."""
    spec = json.loads(Path(spec_path).read_text())
    settings = EvaluationSettings(**spec["evaluation"])
    run_dir = Path(spec["run_dir"])
    seed = int(spec["seed"])
    code = code_version()  # before the library trains: the code imported is the code at the start
    write_json(run_dir / CODE, code)
    started = time.perf_counter()
    cli = build(spec["configs"])  # an attention window follows the data's context by itself
    # the trial's `zoo fit` config as one file (before the trial swaps in its own selection
    # callbacks): `zoo fit --config <it> --trainer.default_root_dir <elsewhere>` trains the same
    # model on the same data with the same seed
    fit_config = run_dir / "fit.yaml"
    fit_config.write_text(cli.parser.dump(cli.config, skip_none=False))
    cooldown = _check(cli, settings)
    report = Report(run_dir)
    budgets = BudgetCheckpoints(
        run_dir / "selected", settings.budgets, monitor=MONITOR, cooldown=cooldown
    )
    stopping = EarlyStopping(monitor=MONITOR, mode="max", patience=settings.patience)
    select_with(
        cli.trainer, budgets, settings, seed, report, *([stopping] if settings.patience else [])
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    if budgets.curve and budgets.curve[-1][0] != cli.trainer.global_step:
        # a run is validated where it ends (its cap between validations), as its branches are
        cli.trainer.validate(cli.model, cli.datamodule)
    if not cli.trainer.is_global_zero:
        return 0  # a trial trained by DDP selects, plays the test split and records once, on rank 0
    selected, branches = train_branches(spec, settings, seed, budgets)
    fit_seconds = time.perf_counter() - started
    max_steps, steps = cli.trainer.max_steps, cli.trainer.global_step
    if not selected:  # no validation ran: the weights at the end are the choice
        checkpoint = str(run_dir / "selected" / f"step{steps}.ckpt")
        cli.trainer.save_checkpoint(checkpoint)
        selected = {max(max_steps, steps): {"step": steps, "value": None, "checkpoint": checkpoint}}
    chosen = selected[max(selected)]
    record: dict[str, Any] = {
        **_record_head(spec),
        "settings": yaml_safe(cli.config.as_dict()),
        "protocol": {
            **dataclasses.asdict(settings),
            "eval_seeds": settings.eval_seeds(seed),
            "val_tasks": [int(t) for t in cli.datamodule.val_tasks],
            "monitor": MONITOR,
        },
        "validation": validation_summary([[step, value] for step, value in budgets.curve]),
        "steps_trained": steps,
        "max_steps": max_steps,
        # the run ended at its step budget, not because validation stopped improving
        "budget_capped": bool(max_steps > 0 and steps >= max_steps),
        "budgets": {
            str(b): {"step": c["step"], "val": c["value"]}
            | ({"branch_from": c["branch_from"]} if "branch_from" in c else {})
            for b, c in selected.items()
        },
        **branches,
        "cost": {
            "parameters": count_parameters(cli.model.backbone),
            "parameters_total": count_parameters(cli.model),
            "train_tokens_per_s": round(report.tokens / max(report.train_seconds, 1e-9), 1),
            "fit_seconds": round(fit_seconds, 1),
            "threads": torch.get_num_threads(),
        },
        "commands": {"fit": f"zoo fit --config {fit_config}"},
        "code": code,
    }
    attrs = _attrs_before_plays(record, chosen)
    if settings.test:
        play_held_out(selected, settings, seed, run_dir, record, attrs)
    if torch.cuda.is_available():
        attrs["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        record["cost"]["peak_cuda_mb"] = attrs["peak_cuda_mb"]
    attrs["budgets"] = {
        b: {k: v for k, v in r.items() if k != "test"}
        | ({"return_final": r["test"]["return_final"]} if "test" in r else {})
        for b, r in record["budgets"].items()
    }
    write_json(run_dir / RECORD, record)
    write_json(run_dir / "result.json", {"attrs": attrs})
    return 0


def _attrs_before_plays(record: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """The trial's user attributes from its record before any held-out play: its choice at the
    cap, steps, cost and validation; its objective the chosen validation return (a tuning trial's,
    which plays nothing held out)."""
    return {
        "val_return_final": chosen["value"],
        "selected_step": chosen["step"],
        "steps_trained": record["steps_trained"],
        "max_steps": record["max_steps"],
        "budget_capped": record["budget_capped"],
        "parameters": record["cost"]["parameters"],
        "parameters_total": record["cost"]["parameters_total"],
        "train_tokens_per_s": record["cost"]["train_tokens_per_s"],
        "global_step": record["steps_trained"],
        "checkpoint": chosen["checkpoint"],
        "fit_command": record["commands"]["fit"],
        "validation_peak": record["validation"]["peak"],
        "validation_final": record["validation"]["final"],
        "objective": chosen["value"],
    }


def _check(cli: Any, settings: EvaluationSettings) -> float | None:
    """What must hold before training, said now rather than hours later: validation tasks to
    select on, the held-out splits the env has, no patience under wsd. The run's wsd cooldown,
    or None under a schedule that does not depend on its length."""
    if len(cli.datamodule.val_tasks) == 0:
        raise ValueError("sweep trials select on validation tasks: data.val_fraction must be > 0")
    family = make_family(cli.datamodule.env["name"], **cli.datamodule.env.get("params", {}))
    splits: list[Literal["test", "lockbox", "ood"]] = [settings.split] * settings.test
    for split in splits + ["lockbox"] * settings.lockbox:
        family.sample_tasks(split, 1, seed=0)  # a split the env lacks: said now, not after training
    hp = cli.model.hparams
    cooldown = hp.cooldown if hp.get("schedule") == "wsd" else None
    if cooldown is not None and settings.patience:
        raise ValueError(
            "evaluation.patience stops a model.schedule wsd run before its decay: set "
            "evaluation.patience 0 (every run trains to its cap)"
        )
    if cooldown is not None and settings.budgets and cli.trainer.accumulate_grad_batches > 1:
        raise ValueError(
            "decay branches start from a step's checkpoint, which gradient accumulation splits: "
            "set trainer.accumulate_grad_batches 1 (or leave evaluation.budgets empty)"
        )
    return cooldown


def select_with(
    trainer: pl.Trainer,
    chooser: BudgetCheckpoints,
    settings: EvaluationSettings,
    seed: int,
    *extra: pl.Callback,
) -> None:
    """The study decides how trials are evaluated and selected: the experiment's own in-context
    evaluation and its checkpoint selection on the same metric are replaced by the study's, on
    the validation tasks under the training seed."""
    callbacks = [
        c
        for c in callbacks_of(trainer)
        if not isinstance(c, InContextEvaluation)
        and not (isinstance(c, ModelCheckpoint) and c.monitor == MONITOR)
    ]
    evaluation = InContextEvaluation.of(settings.validation(seed))
    callbacks_of(trainer)[:] = [*callbacks, evaluation, *extra, chooser]


def train_branches(
    spec: dict[str, Any], settings: EvaluationSettings, seed: int, budgets: BudgetCheckpoints
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Each budget's choice, by budget. Under wsd, each budget below the cap is first trained as
    its own decay from the long run's branch point (`zoo.selection`), and its choice is the
    better of the long run's validations before that point and the branch's; the record's
    `branches` (each branch's validation curve) and `branch_steps` come back beside."""
    run_dir = Path(spec["run_dir"])
    selected = budgets.selected()
    steps, curves = 0, {}
    for budget, start in budgets.branches().items():
        if not start.is_file():  # the run stopped before the branch point
            continue
        logger = {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "csv", "version": f"branch-{budget}"},
        }
        branch = build(
            [
                *spec["configs"],
                {
                    "trainer": {
                        "max_steps": budget,
                        "default_root_dir": str(run_dir / f"branch-{budget}"),
                        "logger": logger,
                    }
                },
            ]
        )
        chooser = BudgetCheckpoints(
            run_dir / "selected" / f"branch{budget}", [budget], monitor=MONITOR
        )
        select_with(branch.trainer, chooser, settings, seed)
        branch.trainer.fit(branch.model, branch.datamodule, ckpt_path=str(start))
        if not chooser.curve or chooser.curve[-1][0] != budget:  # its end between validations
            branch.trainer.validate(branch.model, branch.datamodule)
        branch_from = int(start.stem.removeprefix("branch-step"))
        steps += branch.trainer.global_step - branch_from
        ends = chooser.selected().get(budget)
        if ends is not None:
            ends["branch_from"] = branch_from
        choice = merge(selected.get(budget), ends)
        if choice is not None:
            selected[budget] = choice
        curves[str(budget)] = [[step, value] for step, value in chooser.curve]
    extra = {"branches": curves, "branch_steps": steps} if curves else {}
    return dict(sorted(selected.items())), extra  # by budget (one only a branch chose, too)


def play_held_out(
    selected: dict[int, dict[str, Any]],
    settings: EvaluationSettings,
    seed: int,
    run_dir: Path,
    record: dict[str, Any],
    attrs: dict[str, Any],
) -> None:
    """Each budget's chosen checkpoint on the held-out split (a checkpoint chosen by several
    budgets plays once), and the cap's on the lockbox when the protocol says so; into the
    record and the trial's attributes."""
    chosen = selected[max(selected)]
    plays: dict[str, dict[str, Any]] = {}
    for budget, choice in selected.items():
        if choice["checkpoint"] not in plays:
            plays[choice["checkpoint"]] = _play_test(
                choice["checkpoint"], settings, settings.eval_seeds(seed), run_dir,
                source=not plays,
            )  # fmt: skip
        record["budgets"][str(budget)]["test"] = plays[choice["checkpoint"]]["record"]
    cap_play = plays[chosen["checkpoint"]]
    attrs.update(cap_play["attrs"])
    first = plays[selected[min(selected)]["checkpoint"]]  # the play that ran the source
    attrs.update({k: v for k, v in first["attrs"].items() if k.startswith("source_")})
    attrs["objective"] = attrs["return_final"]
    record["test"] = cap_play["record"]
    record["source"] = first.get("source")
    if settings.lockbox:
        lockbox = _play_test(
            chosen["checkpoint"],
            dataclasses.replace(settings, split="lockbox"),
            settings.eval_seeds(seed),
            run_dir,
        )
        record["lockbox"] = {**lockbox["record"], "source": lockbox.get("source")}
        attrs["lockbox_return_final"] = lockbox["attrs"]["return_final"]
        attrs["lockbox_fraction_optimal"] = lockbox["attrs"]["fraction_optimal"]
        attrs["lockbox_source_return_final"] = lockbox["attrs"].get("source_return_final")
    record["commands"]["evaluate"] = attrs["evaluate_command"]
    record["cost"]["eval_steps_per_s"] = attrs["eval_steps_per_s"]


def _play_test(
    checkpoint: str,
    settings: EvaluationSettings,
    seeds: list[int],
    run_dir: Path,
    *,
    source: bool = True,
) -> dict[str, Any]:
    """A chosen checkpoint on the held-out split (`settings.split`), once per evaluation seed:
    `attrs` (summaries over every (seed, task) pair, per-seed final returns, the curve; the
    source learner on the same tasks when `source`), and `record`, the returns per seed and task."""
    # the test play runs where training ran: a GPU trial is not played on the CPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    step = int(Path(checkpoint).stem.removeprefix("step"))
    # a decay branch's checkpoint (selected/branch<b>/step<n>.ckpt) beside the run's own
    branch = Path(checkpoint).parent.name
    label = f"{branch}-step{step}" if branch.startswith("branch") else f"step{step}"
    plays = _Plays()
    for seed in seeds:
        result = evaluate_checkpoint(
            checkpoint,
            settings.held_out(seed),
            source_episodes=None if source else 0,
            device=device,
        )
        write_outputs(result, run_dir / f"{settings.split}-{label}-seed{seed}")
        plays.add(seed, result, settings.episodes)
    every, best, floor = plays.pooled()
    summary = summarise(every, best, final_episodes=settings.final_episodes, random=floor)
    attrs: dict[str, Any] = {
        **summary,
        "curve": every.mean(0).tolist(),
        "test_tasks": len(plays.returns[0]),
        "test_split": settings.split,
        "eval_seeds": list(seeds),
        "return_final_by_seed": plays.finals,
        "eval_steps_per_s": round(plays.env_steps / max(plays.seconds, 1e-9), 1),
        "eval_dir": str(run_dir / f"{settings.split}-{label}-seed{seeds[0]}"),
        "evaluate_command": settings.held_out(seeds[0]).command(
            checkpoint, seed=f"<each of {' '.join(map(str, seeds))}>"
        ),
    }
    out: dict[str, Any] = {
        "attrs": attrs,
        "record": {
            "split": settings.split,
            "step": step,
            **{
                k: summary[k]
                for k in ("return_final", "fraction_optimal", "nauc", "above_random")
                if k in summary
            },
            "return_final_by_seed": dict(zip(map(str, seeds), plays.finals, strict=True)),
            "by_seed": plays.by_seed,
        },
    }
    if plays.source_curves:
        out["source"] = plays.source(attrs, best, floor, settings.final_episodes)
    return out


@dataclasses.dataclass
class _Plays:
    """One checkpoint's plays of a held-out split, one per evaluation seed, as they come."""

    returns: list[np.ndarray] = dataclasses.field(default_factory=list)
    optimal: list[np.ndarray] = dataclasses.field(default_factory=list)
    randoms: list[Any] = dataclasses.field(default_factory=list)
    finals: list[float] = dataclasses.field(default_factory=list)
    by_seed: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    env_steps: int = 0
    source_learner: str | None = None
    keep_every: int | None = None
    source_curves: list[Any] = dataclasses.field(default_factory=list)
    source_by_seed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, seed: int, result: dict[str, Any], episodes: int) -> None:
        """One evaluation seed's `evaluate_checkpoint` result (`episodes` played per task)."""
        self.returns.append(np.asarray(result["returns"]))
        self.optimal.append(np.asarray(result["optimal"]))
        self.finals.append(result["summary"]["return_final"])
        self.by_seed[str(seed)] = {
            "tasks": result["tasks"],
            "optimal": result["optimal"],
            "returns": _rounded(result["returns"]),
        }
        if result.get("random") is not None:  # random play's expected return, where known
            self.by_seed[str(seed)]["random"] = result["random"]
            self.randoms.append(np.asarray(result["random"]))
        self.seconds += result["seconds"]
        self.env_steps += result["env_steps"]
        if result["source"]:
            self.source_learner = result["source"]["learner"]
            self.keep_every = result["source"]["episodes"] // episodes
            self.source_curves.append(np.asarray(result["source"]["returns"]))
            self.source_by_seed[str(seed)] = _rounded(result["source"]["returns"])

    def pooled(self) -> tuple[Any, Any, Any]:
        """(returns, optimal returns, random play's returns or None) of every (seed, task)."""
        floor = np.concatenate(self.randoms) if self.randoms else None
        return np.concatenate(self.returns), np.concatenate(self.optimal), floor

    def source(
        self, attrs: dict[str, Any], best: Any, floor: Any, final_episodes: int
    ) -> dict[str, Any]:
        """The source learner's summaries into `attrs`; its record (every seed's curves)."""
        every_source = np.concatenate(self.source_curves)
        attrs["source_learner"] = self.source_learner
        attrs["source_curve"] = every_source.mean(0).tolist()
        summary = summarise(every_source, best, final_episodes=final_episodes, random=floor)
        attrs["source_return_final"] = summary["return_final"]
        if "above_random" in summary:
            attrs["source_above_random"] = summary["above_random"]
        return {
            "learner": self.source_learner,
            # the learner's episode k of this curve is its stored episode k / keep_every
            "episodes": every_source.shape[1],
            "keep_every": self.keep_every,
            "by_seed": self.source_by_seed,
        }


def _rounded(rows: list[list[float]]) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in rows]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
