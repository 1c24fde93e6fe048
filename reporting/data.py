"""Loading for `zoo report`: one row per trial of Optuna studies (the sweep contract) or per
`zoo evaluate` output (backbone, context and seed read from the run's LightningCLI config.yaml)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeps.ablation import AXIS_PATHS
from sweeps.study import GRID_POINT

RUN_COLUMNS = (
    "return_final",
    "return_first",
    "auc",
    "fraction_optimal",
    "nauc",
    "episodes_to_80",
    "optimal",
    "val_return_final",
    "selected_step",
    "steps_trained",
    "max_steps",
    "budget_capped",
    "tuned_from",
    "test_tasks",
    "test_split",
    "eval_seeds",
    "return_final_by_seed",
    "curve",
    "source_learner",
    "source_curve",
    "source_return_final",
    "parameters",
    "parameters_total",
    "train_tokens_per_s",
    "eval_steps_per_s",
    "peak_rss_mb",
    "wall_seconds",
    "global_step",
    "checkpoint",
    "eval_dir",
    "run_dir",
    "fit_command",
    "evaluate_command",
    "rerun_command",
    "budgets",
    "above_random",
    "source_above_random",
    "lockbox_return_final",
    "lockbox_fraction_optimal",
    "validation_peak",
    "validation_final",
    "validation_curve",
    "record",
)
"""Trial user attributes (the sweep contract) that become columns of the run table."""


class ReportError(RuntimeError):
    """A problem with the report's inputs, with a message that says what to fix."""


# ------------------------------------------------------------------------------------ loading
def load_studies(storage_url: str, names: list[str]) -> pd.DataFrame:
    """One row per trial of every named study: its state, params, value and user attributes."""
    import optuna

    storage = open_study_storage(storage_url)
    known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    rows = []
    for name in names:
        if name not in known:
            raise ReportError(
                f"no study {name!r} in {storage_url}; studies there: {', '.join(known) or 'none'}"
            )
        study = optuna.load_study(study_name=name, storage=storage)
        kind = study.user_attrs.get("kind", "ablation")
        config = study.user_attrs.get("config", {})
        mode = data_mode_of(config.get("experiment"), config.get("fit"), config.get("fit_args"))
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            # a waiting grid trial has no params until a worker starts it: the point it was
            # enqueued with is its own attribute
            params = dict(trial.params or attrs.get(GRID_POINT, {}))
            row: dict[str, Any] = {
                "study": name,
                "kind": kind,
                "trial": trial.number,
                "state": trial.state.name,
                "data_mode": mode,
                "backbone": params.get("backbone", config.get("backbone")),
                "context_episodes": params.get("context_episodes", config.get("context_episodes")),
                "seed": params.get("seed", config.get("seed")),
                "params": params,
                "value": trial.value,
                "duplicate_of": attrs.get("duplicate_of"),
            }
            for key, value in params.items():  # a grid's further axes, by config path
                if "." in key:
                    row.setdefault(key, value)
            if row["duplicate_of"] is not None:
                row["state"] = f"DUPLICATE of {row['duplicate_of']}"
            row.update({key: attrs.get(key) for key in RUN_COLUMNS})
            if row["validation_curve"] is None and trial.intermediate_values:
                # what the trial reported to the pruner, one value a validation
                row["validation_curve"] = [
                    list(p) for p in sorted(trial.intermediate_values.items())
                ]
            rows.append(row)
    return pd.DataFrame(rows)


def load_records(root: Path) -> pd.DataFrame:
    """One row per trial record (`trial-*.json` under `root`, as `zoo sweep` writes them with
    `records:`): the same columns as `load_studies`, read from the records alone, with the
    backbone, context, seed and data mode from the record's axes and settings (nothing guessed)."""
    files = sorted(Path(root).rglob("trial-*.json")) if Path(root).is_dir() else []
    if not files:
        raise ReportError(f"no trial records (trial-*.json) under {root}")
    rows = []
    for path in files:
        try:
            record = json.loads(path.read_text())
        except ValueError as error:
            raise ReportError(
                f"{path}: not a trial record ({error}); restore it from git"
            ) from None
        row = _record_row(record, path)
        row.update(_budget_columns(record))
        test = _played(record.get("test"), record)
        if test:
            row.update(test["summary"])
            row.update(value=row["return_final"], **test["columns"])
        else:
            row["value"] = row.get("val_return_final")
        lockbox = _played(record.get("lockbox"), record, floor=False)
        if lockbox:  # the cap's checkpoint on the lockbox split, played once
            row["lockbox_return_final"] = lockbox["summary"]["return_final"]
            row["lockbox_fraction_optimal"] = lockbox["summary"]["fraction_optimal"]
        row.update(_source_columns(record.get("source"), test, record))
        rows.append(row)
    return _one_per_point(pd.DataFrame(rows))


def _record_row(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a record says of its run, before any play: its axes, state, choice and commands."""
    axes = record.get("axes", {})
    settings = record.get("settings") or {}
    validation = record.get("validation") or {}
    commands = record.get("commands") or {}
    row: dict[str, Any] = {
        "study": record.get("study"),
        # records before the kind was recorded: a tuning was the one study that played nothing
        "kind": record.get("kind")
        or ("ablation" if (record.get("protocol") or {}).get("test", True) else "tune"),
        "trial": record.get("trial"),
        "state": record.get("state"),
        "data_mode": (
            (settings.get("data") or {}).get("mode")
            or axes.get("data.mode")
            or record.get("data_mode")
            or "ad"
        ),
        "backbone": axes.get("model.backbone"),
        "context_episodes": axes.get("data.context_episodes"),
        "seed": axes.get("seed_everything", record.get("seed")),
        "params": record.get("params", {}),
        "duplicate_of": None,
        "record": str(path),
        "tuned_from": record.get("tuned_from"),
        "validation_peak": validation.get("peak"),
        "validation_final": validation.get("final"),
        "validation_curve": validation.get("curve"),
        "pruned_at": record.get("pruned_at"),
        "selected_step": None,
        "steps_trained": record.get("steps_trained"),
        "max_steps": record.get("max_steps"),
        "budget_capped": record.get("budget_capped"),
        "fit_command": commands.get("fit"),
        "evaluate_command": commands.get("evaluate"),
        # a complete trial again from this record alone, compared with it to the digit
        "rerun_command": (
            f"zoo sweep rerun {path} --out runs/rerun/{record.get('study')}/"
            f"trial-{int(record.get('trial') or 0):04d}"
            if record.get("state") == "COMPLETE"
            else None
        ),
        **{k: v for k, v in (record.get("cost") or {}).items()},
    }
    for path_, value in axes.items():  # any further axis, by its config path
        if path_ not in AXIS_PATHS.values():  # not backbone, context, seed (their columns)
            row.setdefault(path_, value)
    return row


def _budget_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The cap's choice (step, validation) and every budget's choice and test return."""
    budgets = record.get("budgets") or {}
    if not budgets:
        return {}
    cap = budgets[max(budgets, key=int)]
    return {
        "selected_step": cap.get("step"),
        "val_return_final": cap.get("val"),
        "budgets": {
            b: {"step": c.get("step"), "val": c.get("val"),
                "return_final": (c.get("test") or {}).get("return_final")}
            for b, c in budgets.items()
        },
    }  # fmt: skip


def _played(
    play: dict[str, Any] | None, record: dict[str, Any], *, floor: bool = True
) -> dict[str, Any] | None:
    """A held-out play of a record (its `test` or `lockbox`), every (seed, task) pair together:
    its `summary` (zoo.evaluation.summarise, above random play where `floor` and known), its
    `columns` (curve, tasks, split, seeds), and the arrays the source learner is scored by."""
    from zoo.evaluation import summarise

    if not play:
        return None
    by_seed = play["by_seed"]
    seeds = list(by_seed)
    returns = np.concatenate([np.asarray(by_seed[k]["returns"]) for k in seeds])
    optimal = np.concatenate([np.asarray(by_seed[k]["optimal"]) for k in seeds])
    random = (
        np.concatenate([np.asarray(by_seed[k]["random"]) for k in seeds])
        if floor and all("random" in by_seed[k] for k in seeds)
        else None
    )
    final = int((record.get("protocol") or {}).get("final_episodes", 5))
    return {
        "summary": summarise(returns, optimal, final_episodes=final, random=random),
        "columns": {
            "curve": returns.mean(0).tolist(),
            "test_tasks": len(by_seed[seeds[0]]["returns"]),
            "test_split": play.get("split"),
            "eval_seeds": [int(k) for k in seeds],
            "return_final_by_seed": list((play.get("return_final_by_seed") or {}).values()),
        },
        "optimal": optimal,
        "random": random,
        "final": final,
    }


def _source_columns(
    source: dict[str, Any] | None, test: dict[str, Any] | None, record: dict[str, Any]
) -> dict[str, Any]:
    """The source learner on the test tasks: its curve, and its final return scored as the
    test play is."""
    from zoo.evaluation import summarise

    if not (source and source.get("by_seed")):
        return {}
    curves = np.concatenate([np.asarray(c) for c in source["by_seed"].values()])
    columns: dict[str, Any] = {
        "source_learner": source.get("learner"),
        "source_curve": curves.mean(0).tolist(),
    }
    if test:
        played = summarise(
            curves, test["optimal"], final_episodes=test["final"], random=test["random"]
        )
        columns["source_return_final"] = played["return_final"]
        if "above_random" in played:
            columns["source_above_random"] = played["above_random"]
    return columns


def _one_per_point(runs: pd.DataFrame) -> pd.DataFrame:
    """A grid point's first complete record only: a trial that completed while its worker was
    stopped (its record written, the study's state not) is run again, and both records stay
    on disk; the later ones are marked as duplicates, as the study marks its own."""
    axes = [c for c in ("data_mode", "backbone", "context_episodes", "seed") if c in runs]
    # any other axis is among the trial's params (a grid's point)
    key = (
        runs[axes].astype(str).agg("|".join, axis=1)
        + "|"
        + runs["params"].map(lambda p: json.dumps(p, sort_keys=True))
    )
    done = runs[runs["state"] == "COMPLETE"]
    first = done.groupby([done["study"], key[done.index]])["trial"].transform("min")
    for index in first.index[done["trial"] != first]:
        runs.loc[index, "duplicate_of"] = int(first[index])
        runs.loc[index, "state"] = f"DUPLICATE of {int(first[index])}"
    return runs


def open_study_storage(url: str) -> Any:
    """The storage of `zoo sweep` studies behind `url` (sqlite, any RDB URL, journal://)."""
    import optuna

    from sweeps.study import SweepError, missing_storage, open_storage

    missing = missing_storage(url)
    if missing:
        raise ReportError(missing)
    try:
        with warnings.catch_warnings():  # heartbeat options are experimental; a reader needs none
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return open_storage(url)
    except SweepError as error:
        raise ReportError(str(error)) from error


def data_mode_of(
    experiment: str | None,
    fit: dict[str, Any] | None = None,
    fit_args: list[str] | None = None,
) -> str:
    """`ad` or `ed`: the study's `fit: {data: {mode: ...}}` override (or, in a study recorded
    before `fit:` existed, its `--data.mode` argument), else the data.mode of its `zoo fit`
    experiment config, else `unknown` (the config is not readable here: nothing is guessed from
    a file name; a study's records say their mode)."""
    import yaml

    mode = ((fit or {}).get("data") or {}).get("mode")
    if mode:
        return str(mode)
    args = list(fit_args or [])
    for i, arg in enumerate(args):
        if arg.startswith("--data.mode="):
            return arg.split("=", 1)[1]
        if arg == "--data.mode" and i + 1 < len(args):
            return args[i + 1]
    if not experiment:
        return "ad"
    path = Path(experiment)
    if path.is_file():
        config = yaml.safe_load(path.read_text()) or {}
        return str((config.get("data") or {}).get("mode", "ad"))
    return "unknown"


def load_results(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per `returns.json` under `root` (the output of `zoo evaluate`), with the backbone,
    context and seed read from the run's LightningCLI `config.yaml` or else its checkpoint;
    and notes on files that could not be used."""
    if not root.is_dir():
        raise ReportError(f"--results {root} is not a directory")
    files = sorted(root.rglob("returns.json"))
    if not files:
        raise ReportError(f"no returns.json under {root}: run `zoo evaluate CKPT --out DIR` first")
    rows, notes = [], []
    for number, path in enumerate(files):
        try:
            result = json.loads(path.read_text())
            rows.append({"trial": number, **_result_row(result, path)})
        except (ValueError, KeyError, TypeError, OSError) as error:
            notes.append(f"skipped {path}: {error}")
    if not rows:
        raise ReportError(f"none of the {len(files)} returns.json under {root} could be read")
    runs = pd.DataFrame(rows)
    if "model.objective" in runs:  # beside another objective, the default one by its name
        runs["model.objective"] = runs["model.objective"].fillna("BehaviourCloning")
    return runs, notes


def _result_row(result: dict[str, Any], path: Path) -> dict[str, Any]:
    returns = np.asarray(result["returns"], dtype=float)
    summary = result["summary"]
    checkpoint = Path(result["checkpoint"])
    run = _run_config(checkpoint, path)
    episode_len = (result.get("env") or {}).get("episode_len")
    context = run["context_episodes"]
    if context is None and run["context_len"] and episode_len:
        context = run["context_len"] / episode_len
    from zoo.evaluation import Evaluation

    played = Evaluation(
        episodes=result["episodes"],
        tasks=len(result["tasks"]) // int(result.get("repeats", 1)),
        mode=result["mode"],
        split=result["split"],
        final_episodes=result.get("final_episodes", 5),
        seed=result["seed"],
        greedy=bool(result.get("greedy")),
        repeats=int(result.get("repeats", 1)),
    )
    source = result.get("source") or {}
    return {
        "study": str(path.parent),
        "kind": "results",
        "state": "COMPLETE",
        "data_mode": run["mode"],
        "backbone": run["backbone"],
        "context_episodes": None if context is None else float(context),
        "seed": run["seed"],
        "params": {},
        "value": summary["return_final"],
        "duplicate_of": None,
        **{key: summary.get(key) for key in ("return_final", "return_first", "auc")},
        "fraction_optimal": summary.get("fraction_optimal"),
        "optimal": summary.get("optimal"),
        "curve": returns.mean(0).tolist(),
        "source_learner": source.get("learner"),
        "source_curve": np.asarray(source["returns"]).mean(0).tolist() if source else None,
        "source_return_final": (source.get("summary") or {}).get("return_final"),
        "parameters": run["parameters"],
        "checkpoint": str(checkpoint),
        "eval_dir": str(path.parent),
        # an objective other than the default is a further axis (a config path, as a study's)
        **({"model.objective": run["objective"]} if run["objective"] else {}),
        "run_dir": run["run_dir"],
        "fit_command": run["fit_command"],
        "evaluate_command": played.command(checkpoint),
    }


def _run_config(checkpoint: Path, returns_path: Path) -> dict[str, Any]:
    """Backbone, context, data mode and seed of the run behind a checkpoint.

    The checkpoint's own hyper-parameters decide what was trained (a config.yaml can be rewritten
    by a later run logging to the same directory); the seed and the command that reruns the run
    come from the LightningCLI config.yaml beside `checkpoints/` (or beside the evaluation)."""
    import yaml

    candidates = [checkpoint.parent.parent, returns_path.parent, returns_path.parent.parent]
    config_path = next(
        (d / "config.yaml" for d in candidates if (d / "config.yaml").is_file()), None
    )
    config = yaml.safe_load(config_path.read_text()) or {} if config_path else {}
    model, data = config.get("model") or {}, config.get("data") or {}
    parameters = None
    if checkpoint.is_file():
        import torch

        # a Lightning checkpoint holds plain hyper-parameter dicts beside the tensors
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = saved.get("hyper_parameters") or model
        data = saved.get("datamodule_hyper_parameters") or data
        parameters = sum(
            t.numel() for k, t in saved["state_dict"].items() if k.startswith("backbone.")
        )
    if not model:
        raise ValueError(f"no config.yaml beside the run and no checkpoint {checkpoint}")
    objective = model.get("objective")  # None: the default, behaviour cloning
    if isinstance(objective, dict):
        objective = objective.get("class_path")
    return {
        "objective": str(objective).rsplit(".", 1)[-1] if objective else None,
        "backbone": _backbone_name(str((model.get("backbone") or {}).get("class_path", "?"))),
        "context_len": data.get("context_len") or model.get("context_len"),
        "context_episodes": data.get("context_episodes"),
        "mode": str(data.get("mode", "ad")),
        "seed": config.get("seed_everything"),
        "parameters": parameters,
        "run_dir": str(config_path.parent) if config_path else str(checkpoint.parent.parent),
        "fit_command": f"zoo fit --config {config_path}" if config_path else None,
    }


def _backbone_name(class_path: str) -> str:
    """The registered name of a backbone class (`backbones.rnn.GRUBackbone` -> `gru`)."""
    from backbones import BACKBONES

    for name, cls in BACKBONES.items():
        if f"{cls.__module__}.{cls.__qualname__}" == class_path:
            return name
    return class_path.rsplit(".", 1)[-1]
