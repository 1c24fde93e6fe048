"""The architecture x context-length x seed ablation: a grid, every point trained and evaluated once.

Each trial is one `zoo fit` run (the experiment config, the backbone's size preset, the context
length in episodes, the seed) followed by the in-context evaluation on held-out tasks; its objective
is the final in-context return.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna

from backbones.presets import preset_path
from sweeps.study import StudyKind, SweepError, duplicate_of, register_study_kind
from sweeps.trial import EvaluationSettings, run_trial


@dataclasses.dataclass
class AblationConfig:
    """A grid study: backbones x context lengths x seeds on one experiment and size preset."""

    experiment: str
    """`zoo fit` config of the experiment (env, data, trainer), e.g. configs/experiments/darkroom.yaml."""
    backbones: list[str]
    """Registered backbone names; each uses its preset configs/backbone/<name>-<size>.yaml."""
    context_episodes: list[float]
    """Training context lengths, in episodes of the env (0.5 = half an episode)."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    """Training seeds: each grid point is trained once per seed (the initialisation, and the
    data's seed: the validation carve, the window order). The grid runs seed-major: every
    point's first seed, then every point's second, ..., so a study stopped at any moment holds
    a complete grid of its first seeds."""
    axes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """More axes of the grid, by `zoo fit` config path: `{data.train_tasks: [16, 32, 58]}`. Each
    point's value is set at its path over the experiment, its preset and tuned settings."""
    scales: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    """Axes of factors, by `zoo fit` config path (a `model.*` or `data.*` setting, not the grid's
    axes, the seeds or the backbone's preset): at each point the setting at that path is the
    factor times the value the trial would train with otherwise (the study's `fit:`, else the
    backbone's tuned file, else the experiment's; a whole number stays whole, rounded):
    `{model.lr: [0.5, 1, 2]}` checks whether settings tuned at one context hold at another.
    Records name the axis `<path>:scale`."""
    size: str = "tiny"
    """Size preset of every backbone (tiny, 100k, 400k, 1.6m): matched parameter counts."""
    fit: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`zoo fit` settings of every trial, over the experiment's, e.g. `{trainer: {max_steps: 300}}`."""
    tuned: str | None = None
    """Directory of tuned settings, `<tuned>/<backbone>.yaml` as the tuning study wrote them
    (`zoo sweep run` on a tune config with `output:`), applied after each backbone's preset; a
    backbone without a file trains on the experiment's settings and its rows say "untuned"."""
    evaluation: EvaluationSettings = dataclasses.field(default_factory=EvaluationSettings)
    """In-context evaluation of every trial on held-out tasks."""
    collection: str | None = None
    """The switch that makes a training seed vary the data's collection too: a `zoo collect`
    config, collected once per training seed `s` with `seed: s` (the task table, the source
    learner's and the envs' randomness) into `<its output>-seed<s>`, on which that seed's trials
    train (`data.path`); None: every seed trains on the experiment's one dataset."""
    runs_dir: str = "runs/sweeps"
    """Where each trial's checkpoints, logs and evaluation go: <runs_dir>/<study>/trial-<n>."""
    records: str | None = None
    """Folder of the trials' records (`<records>/<study name>/trial-<n>.json`, text to commit);
    None: only in each trial's run directory."""

    def __post_init__(self) -> None:
        for name in self.backbones:
            preset_path(name, self.size)  # a clear error for an unknown backbone or size
        if not self.backbones or not self.context_episodes or not self.seeds:
            raise ValueError(
                "backbones, context_episodes and seeds must each list at least one value"
            )
        if self.collection is not None and not Path(self.collection).is_file():
            raise ValueError(f"collection: no collect config {self.collection}")
        if min(self.context_episodes) <= 0:
            raise ValueError(f"context_episodes must be > 0, got {self.context_episodes}")
        for path, values in self.axes.items():
            if path in AXIS_PATHS.values() or "." not in path or not values:
                raise ValueError(
                    f"axes: {path!r} must be a `zoo fit` config path (section.key) with at least "
                    "one value, not one of backbones, context_episodes, seeds (their own keys)"
                )
        for path, factors in self.scales.items():
            # what the trial itself sets (its context, seeds, run directory, logger, device)
            # and the backbone's preset (a file the base is not read from) are not scaled
            fixed = path in [*AXIS_PATHS.values(), "data.seed", *self.axes]
            if fixed or path.startswith(("trainer.", "model.backbone")) or "." not in path:
                raise ValueError(
                    f"scales: {path!r} is not a setting a factor can scale here: give a model.* "
                    "or data.* path other than the grid's own axes, the seeds and the backbone"
                )
            if not factors or any(f <= 0 for f in factors):
                raise ValueError(f"scales: {path!r} needs positive factors, got {factors}")
            for backbone in self.backbones:  # every value a factor will multiply, said now
                self.scaled_base(path, backbone)

    def scaled(self, path: str, backbone: str, factor: float) -> float | int:
        """`factor` times the setting at `path` for `backbone`; a whole-number setting (steps,
        sizes) stays a whole number, rounded."""
        base = self.scaled_base(path, backbone)
        return round(factor * base) if isinstance(base, int) else factor * base

    def resolved(self, path: str, backbone: str) -> Any:
        """The setting at the config path `path` a trial of `backbone` trains with, where the
        study sets it: its `fit:`, else the backbone's tuned file, else the experiment's (the
        order the trial applies them in); None where none of them does."""
        import yaml

        sources: list[tuple[str, Any]] = [(self.experiment, None)]
        tuned = tuned_path(self, backbone)
        if tuned is not None:
            sources.append((str(tuned), None))
        sources.append(("the study's fit:", self.fit))
        value = None
        for name, mapping in sources:
            found = _get(
                yaml.safe_load(Path(name).read_text()) if mapping is None else mapping, path
            )
            value = found if found is not None else value
        return value

    def scaled_base(self, path: str, backbone: str) -> float | int:
        """The value at `path` that `scales` multiply for `backbone` (`resolved`)."""
        value = self.resolved(path, backbone)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"scales: {path!r} has no number to scale for {backbone} in {self.experiment}, "
                f"its tuned file or the study's fit: (found {value!r}); set it in fit:"
            )
        return value

    def seeds_tuned_on(self) -> dict[int, list[str]]:
        """The grid's seeds that tuned settings it applies were chosen on (the `# tuning:` line of
        a backbone's tuned file), each with those backbones. At the tuning's context and cap
        such a run is the tuning's chosen trial again (the best of its trials, with that run's
        luck), and at any other it is judged on the validation goals that chose its settings:
        results on these seeds carry the choice (docs/protocol.md, "Seeds")."""
        from sweeps.tune import read_tuning

        found: dict[int, list[str]] = {}
        for backbone in self.backbones:
            tuned = tuned_path(self, backbone)
            seed = None
            try:  # a line written by hand says nothing here (the settings still apply)
                recorded = (read_tuning(tuned) or {}).get("training_seed") if tuned else None
                seed = None if recorded is None else int(recorded)
            except (SweepError, TypeError, ValueError):
                pass
            if seed in self.seeds:
                found.setdefault(seed, []).append(backbone)
        return found

    def search_space(self) -> dict[str, list]:
        return {
            "backbone": list(self.backbones),
            "context_episodes": [float(c) for c in self.context_episodes],
            "seed": list(self.seeds),
            **{path: list(values) for path, values in self.axes.items()},
            **{
                f"{path}:scale": [float(f) for f in factors]
                for path, factors in self.scales.items()
            },
        }

    def points(self) -> list[dict[str, Any]]:
        """Every grid point, seed-major (the order the study enqueues them)."""
        from sweeps.study import grid_points

        return sorted(grid_points(self.search_space()), key=lambda p: p["seed"])


AXIS_PATHS = {
    "backbone": "model.backbone",
    "context_episodes": "data.context_episodes",
    "seed": "seed_everything",
}
"""The grid's shorthand axes and the `zoo fit` config paths they set (records name axes by path)."""


def _get(config: Any, path: str) -> Any:
    """The value at the config path `a.b` of a mapping, None where there is none."""
    for key in path.split("."):
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


def at_path(path: str, value: Any) -> dict[str, Any]:
    """`{a: {b: value}}` for the config path `a.b`."""
    head, _, rest = path.partition(".")
    return {head: at_path(rest, value) if rest else value}


def sampler(config: AblationConfig, *, stream: int = 0) -> optuna.samplers.BaseSampler:
    # Every worker must shuffle the grid the same way (seed 0): trial number n runs grid point n.
    return optuna.samplers.GridSampler(config.search_space(), seed=0)


def objective(trial: optuna.Trial, config: AblationConfig) -> float:
    space = config.search_space()
    backbone = trial.suggest_categorical("backbone", space["backbone"])
    context_episodes = trial.suggest_categorical("context_episodes", space["context_episodes"])
    seed = trial.suggest_categorical("seed", space["seed"])
    # every axis is drawn before the duplicate check, which compares whole points
    extra = {path: trial.suggest_categorical(path, space[path]) for path in config.axes}
    factors = {path: trial.suggest_categorical(f"{path}:scale", space[f"{path}:scale"])
               for path in config.scales}  # fmt: skip
    earlier = duplicate_of(trial, sorted(space))
    if earlier is not None:
        trial.set_user_attr("duplicate_of", earlier)
        raise optuna.TrialPruned(f"grid point already taken by trial {earlier}")
    tuned = tuned_path(config, backbone)
    trial.set_user_attr("tuned_from", None if tuned is None else str(tuned))
    data = []
    if config.collection is not None:  # this seed's own collection of the data
        from zoo.collection import collected_with_seed

        data = [at_path("data.path", str(collected_with_seed(config.collection, seed)))]
    return run_trial(
        trial,
        experiment=config.experiment,
        backbone_preset=str(preset_path(backbone, config.size)),
        context_episodes=context_episodes,
        seed=seed,
        overrides=[
            *([str(tuned)] if tuned else []),
            config.fit,
            *(at_path(path, value) for path, value in extra.items()),
            *(at_path(path, config.scaled(path, backbone, f)) for path, f in factors.items()),
            *data,
        ],
        evaluation=config.evaluation,
        runs_dir=config.runs_dir,
        tuned_from=None if tuned is None else str(tuned),
        axes={
            AXIS_PATHS["backbone"]: backbone,
            AXIS_PATHS["context_episodes"]: context_episodes,
            AXIS_PATHS["seed"]: seed,
            **extra,
            **{f"{path}:scale": f for path, f in factors.items()},
        },
        records=None
        if config.records is None
        else str(Path(config.records) / trial.study.study_name),
    )


def tuned_path(config: AblationConfig, backbone: str) -> Path | None:
    """The tuned settings of `backbone` (`<tuned>/<backbone>.yaml`), or None if it has none."""
    if config.tuned is None:
        return None
    path = Path(config.tuned) / f"{backbone}.yaml"
    return path if path.is_file() else None


def pruner(config: AblationConfig) -> optuna.pruners.BasePruner:
    # every grid point is trained to its own stopping rule: nothing is cut short by comparison
    # with other points (Optuna's default, a median pruner, would prune slow starters)
    return optuna.pruners.NopPruner()


register_study_kind(
    "ablation",
    StudyKind(config=AblationConfig, sampler=sampler, objective=objective, pruner=pruner),
)
