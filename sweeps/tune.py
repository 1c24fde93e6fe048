"""Per-backbone tuning under a parameter budget (TPE), so the ablation compares tuned backbones.

The search space: learning rate, warm-up, dropout, AD's regularisers (token masking, label
smoothing, attention dropout where the backbone has attention) and depth; the width is then the
largest that keeps the backbone within the budget (so deeper means narrower, never bigger). The
objective is the best in-context return on the run's *validation* tasks (training-distribution
goals whose histories it did not train on); unpromising trials are pruned on the same number,
reported by global step. No tuning trial plays a test task.

The chosen settings are written as a `zoo fit` config fragment (`output`, by `zoo sweep` when the
study ends, or `zoo sweep export`) that the ablation reads (`tuned:`): no hand-copied numbers.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import zlib
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from backbones import BACKBONES, count_parameters, create_backbone
from backbones.presets import preset_path
from sweeps.study import StudyKind, SweepError, register_study_kind
from sweeps.trial import EvaluationSettings, run_trial


@dataclasses.dataclass
class TuneConfig:
    """A TPE study of one backbone's training and shape hyper-parameters under a parameter budget."""

    experiment: str
    """`zoo fit` config of the experiment, e.g. configs/experiments/darkroom.yaml."""
    backbone: str
    """Registered backbone name; its preset configs/backbone/<name>-<size>.yaml is the base."""
    size: str = "100k"
    """Preset whose parameter count is the budget (unless `param_budget` is given)."""
    param_budget: int | None = None
    """Most backbone parameters a trial may have; default: the preset's count."""
    context_episodes: float = 4.0
    """Training context length, in episodes."""
    seed: int = 0
    """Training seed of every trial (tune first, then repeat the best over seeds in the ablation)."""
    trials: int | None = None
    """Trials of the study (complete and pruned; a failed trial is run again): every backbone
    tuned with the same number. Workers stop starting trials once the study has them. None: each
    worker runs its `--n_trials`."""
    sampler_seed: int | None = None
    """Seed of the TPE sampler; None: one of the backbone's own (from its name), so no two
    backbones draw the same sequence of points."""
    lr: tuple[float, float] = (1e-4, 3e-3)
    """Learning-rate range (log-uniform)."""
    warmup_steps: list[int] = dataclasses.field(default_factory=lambda: [0, 100, 500])
    """Warm-up lengths to choose from."""
    dropout: tuple[float, float] = (0.0, 0.2)
    """Dropout range, for backbones that take a `dropout` argument."""
    depths: list[int] | None = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    """Depths (blocks or layers) to choose from; the width follows from the budget. None: the
    preset's own depth only (one study config then fits every backbone's shape)."""
    token_mask: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.3])
    """Token-masking probabilities to choose from (AD: 0.3)."""
    label_smoothing: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.1])
    """Label-smoothing amounts to choose from."""
    attn_dropout: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.1])
    """Attention-dropout rates to choose from, for backbones that take `attn_dropout`."""
    prune_after_steps: int = 500
    """No trial is pruned before this global step (early in-context returns are mostly noise)."""
    pruner: Literal["hyperband", "median"] = "hyperband"
    """`hyperband`: Optuna's Hyperband (successive halving in brackets, the smallest resource
    `prune_after_steps`, the largest the trials' `max_steps`), so settings are judged at the
    budget they will be used at and poor ones stop early; `median`: the median rule."""
    records: str | None = None
    """Folder of the trials' records (`<records>/<study name>/trial-<n>.json`, text to commit);
    None: only in each trial's run directory."""
    output: str | None = None
    """Where the chosen settings go (a `zoo fit` config fragment, e.g.
    configs/tuned/darkroom/transformer.yaml); None: not written."""
    fit: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`zoo fit` settings of every trial, over the experiment's, e.g. `{trainer: {max_steps: 300}}`."""
    evaluation: EvaluationSettings = dataclasses.field(default_factory=EvaluationSettings)
    """In-context evaluation of every trial on held-out tasks."""
    runs_dir: str = "runs/sweeps"
    """Where each trial's checkpoints, logs and evaluation go."""


def sampler(config: TuneConfig, *, stream: int = 0) -> optuna.samplers.BaseSampler:
    """TPE seeded by the config's seed and `stream`: workers running side by side, and a worker
    resuming a study, each get their own stream (one seed for all would draw the same points)."""
    import numpy as np

    seed = int(np.random.SeedSequence([sampler_seed(config), stream]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def sampler_seed(config: TuneConfig) -> int:
    """The config's `sampler_seed`, else the backbone's own (from its name: the same on every
    machine, another for every backbone)."""
    if config.sampler_seed is not None:
        return config.sampler_seed
    return zlib.crc32(config.backbone.encode())


def pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=3, n_warmup_steps=config.prune_after_steps
        )
    max_steps = (config.fit.get("trainer") or {}).get("max_steps")
    return optuna.pruners.HyperbandPruner(
        min_resource=config.prune_after_steps,
        max_resource=int(max_steps) if max_steps else "auto",
        reduction_factor=3,
    )


def preset_init_args(backbone: str, size: str) -> tuple[str, dict[str, Any]]:
    """The preset file of a backbone size and its `init_args`."""
    if backbone not in BACKBONES:
        raise SweepError(f"unknown backbone {backbone!r}; registered: {sorted(BACKBONES)}")
    try:
        path = preset_path(backbone, size)
    except FileNotFoundError as error:
        raise SweepError(str(error)) from error
    return str(path), dict(yaml.safe_load(path.read_text())["init_args"])


def widest_within_budget(backbone: str, init_args: dict[str, Any], budget: int) -> dict[str, Any]:
    """`init_args` with every width argument set to the largest multiple of 8 whose model fits
    `budget` (widths a backbone refuses, e.g. not divisible by its heads, are skipped)."""
    widths = list(BACKBONES[backbone].width_args)  # the contract names them
    best = None
    for width in range(8, 1 << 16, 8):
        args = {**init_args, **dict.fromkeys(widths, width)}
        try:
            size = count_parameters(create_backbone(backbone, **args))
        except ValueError:  # this width does not divide into the backbone's heads or groups
            continue
        if size > budget:
            break
        best = args
    if best is None:
        raise SweepError(f"{backbone}: even the narrowest model exceeds the budget of {budget}")
    return best


def depth_choices(config: TuneConfig, init_args: dict[str, Any]) -> list[int]:
    """The depths a trial draws from: the config's, or the preset's own (`depths: null`).
    `depth` is every member's name for its number of blocks or layers (the backbone contract)."""
    return list(config.depths) if config.depths is not None else [int(init_args["depth"])]


def objective(trial: optuna.Trial, config: TuneConfig) -> float:
    preset, init_args = preset_init_args(config.backbone, config.size)
    budget = config.param_budget or count_parameters(create_backbone(config.backbone, **init_args))
    accepted = set(inspect.signature(BACKBONES[config.backbone].__init__).parameters)
    model = {
        "lr": trial.suggest_float("lr", *config.lr, log=True),
        "warmup_steps": trial.suggest_categorical("warmup_steps", config.warmup_steps),
        "token_mask": trial.suggest_categorical("token_mask", config.token_mask),
        "label_smoothing": trial.suggest_categorical("label_smoothing", config.label_smoothing),
    }
    overrides: dict[str, Any] = {}
    overrides["depth"] = trial.suggest_categorical("depth", depth_choices(config, init_args))
    if "dropout" in accepted:
        overrides["dropout"] = trial.suggest_float("dropout", *config.dropout)
    if "attn_dropout" in accepted:
        overrides["attn_dropout"] = trial.suggest_categorical("attn_dropout", config.attn_dropout)
    shaped = widest_within_budget(config.backbone, {**init_args, **overrides}, budget)
    parameters = count_parameters(create_backbone(config.backbone, **shaped))
    trial.set_user_attr("backbone_init_args", shaped)
    trial.set_user_attr("model_settings", model)
    trial.set_user_attr("param_budget", budget)
    changed = {k: v for k, v in shaped.items() if init_args.get(k) != v}
    point = {"model": {**model, "backbone": {"init_args": changed}}}
    trial.set_user_attr("backbone_parameters", parameters)
    return run_trial(
        trial,
        experiment=config.experiment,
        backbone_preset=preset,
        context_episodes=config.context_episodes,
        seed=config.seed,
        overrides=[point, config.fit],
        # tuning selects on validation tasks only: the test split is never played
        evaluation=dataclasses.replace(config.evaluation, test=False),
        runs_dir=config.runs_dir,
        axes={
            "model.backbone": config.backbone,
            "data.context_episodes": config.context_episodes,
            "seed_everything": config.seed,
        },
        records=None
        if config.records is None
        else str(Path(config.records) / trial.study.study_name),
    )


def tuned_settings(study: optuna.Study, config: TuneConfig) -> tuple[dict[str, Any], str]:
    """The best complete trial's settings as a `zoo fit` config fragment (`model:` keys, and the
    backbone's `init_args`, applied after its preset), and a comment saying where they came from."""
    finished = sorted(
        study.get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED),
        ),
        key=lambda t: t.number,
    )
    # the study's first `trials` finished trials (two workers may finish one more): every
    # backbone's settings are chosen from the same number of trials
    finished = finished[: config.trials] if config.trials else finished
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise SweepError(f"study {study.study_name!r} has no complete trial to take settings from")
    best = max(complete, key=lambda t: float(t.value if t.value is not None else float("-inf")))
    attrs = best.user_attrs
    backbone = {k: v for k, v in attrs["backbone_init_args"].items() if k != "context_len"}
    fragment = {"model": {**attrs["model_settings"], "backbone": {"init_args": backbone}}}
    preset = preset_path(config.backbone, config.size)
    if preset.is_relative_to(Path.cwd()):
        preset = preset.relative_to(Path.cwd())
    worker_seconds = sum(float(t.user_attrs.get("wall_seconds", 0.0)) for t in study.trials)
    pruned = len(finished) - len(complete)
    max_steps = (config.fit.get("trainer") or {}).get("max_steps")
    tuning = {
        "study": study.study_name,
        "trials": len(finished),
        "complete": len(complete),
        "pruned": pruned,
        "pruner": config.pruner,
        "sampler_seed": sampler_seed(config),
        "training_seed": config.seed,
        "context_episodes": config.context_episodes,
        "max_steps": max_steps,
        "best_trial": best.number,
        "best_validation_return": None if best.value is None else round(best.value, 4),
        "selected_step": attrs.get("selected_step"),
        "worker_seconds": round(worker_seconds),
    }
    note = (
        f"Tuned settings of {config.backbone}; apply after its preset:\n"
        f"  zoo fit --config EXPERIMENT --model.backbone {preset} --config <this file>\n"
        f"From study {study.study_name!r}: trial {best.number}, the best of {len(complete)} "
        f"complete trial(s),\nvalidation return {best.value:.3f} at step "
        f"{attrs.get('selected_step')} of {attrs.get('steps_trained')} "
        f"({attrs.get('backbone_parameters')} backbone parameters, budget "
        f"{attrs.get('param_budget')});\nselected on validation goals, never on test goals.\n"
        f"{len(finished)} trials ({pruned} pruned by {config.pruner}), sampler seed "
        f"{sampler_seed(config)}, training seed {config.seed}, at most {max_steps} steps; "
        f"{round(worker_seconds)} worker-seconds in all.\n"
        f"tuning: {json.dumps(tuning)}"
    )
    return fragment, note


def write_tuned(study: optuna.Study, config: TuneConfig, path: str | None = None) -> Path:
    """Write the study's chosen settings to `path` (default: the config's `output`)."""
    target = Path(path or config.output or "")
    if not str(target):
        raise SweepError("no output path: set `output:` in the tuning config or pass --out")
    fragment, note = tuned_settings(study, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in note.splitlines())
    target.write_text(comment + yaml.safe_dump(fragment, sort_keys=False))
    return target


def read_tuning(path: str | Path) -> dict[str, Any] | None:
    """The `# tuning: {...}` line `write_tuned` put in a tuned file (its study, trials, training
    seed, context, cap and choice), or None where the file has none (settings written by hand)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("# tuning: "):
            try:
                return dict(json.loads(line.removeprefix("# tuning: ")))
            except (json.JSONDecodeError, TypeError, ValueError) as error:
                raise SweepError(
                    f"{path}: its '# tuning:' line is not a JSON mapping ({error})"
                ) from error
    return None


def untuned_reason(path: str | Path, config: TuneConfig, study: str) -> str | None:
    """Why the settings at `path` are not study `study`'s finished choice at this config's
    protocol (None: they are): its `# tuning:` line must name the study and its trial count,
    pruner, sampler seed, training seed, context and cap. What `scripts/study.sh` asks before it
    tunes a backbone again or runs a study on the tuned settings."""
    if not Path(path).is_file():
        return f"{path} does not exist"
    recorded = read_tuning(path)
    if recorded is None:
        return f"{path} has no '# tuning:' line (settings written by hand, or by an older zoo)"
    wanted = {
        "study": study,
        "trials": config.trials,
        "pruner": config.pruner,
        "sampler_seed": sampler_seed(config),
        "training_seed": config.seed,
        "context_episodes": float(config.context_episodes),
        "max_steps": (config.fit.get("trainer") or {}).get("max_steps"),
    }
    differ = [f"{k} {recorded.get(k)!r} (this protocol: {v!r})" for k, v in wanted.items()
              if recorded.get(k) != v]  # fmt: skip
    return f"{path} was tuned at another protocol: " + ", ".join(differ) if differ else None


register_study_kind(
    "tune", StudyKind(config=TuneConfig, sampler=sampler, objective=objective, pruner=pruner)
)
