"""`zoo sweep`: run an Optuna study of the zoo, or print its progress (`zoo sweep status`).

    zoo sweep --study ablation --config configs/sweeps/darkroom_ablation.yaml [--workers 2]
    zoo sweep status --config configs/sweeps/darkroom_ablation.yaml
    zoo sweep --config configs/sweeps/darkroom_tune.yaml --backbone gru --n_trials 5
    zoo sweep export --config configs/sweeps/darkroom_tune.yaml --backbone gru [--out FILE]

A tuning study's chosen settings are written to its config's `output:` when the study ends (and by
`zoo sweep export`): the `zoo fit` config fragment an ablation's `tuned:` directory holds.

Every worker (this process, its `--workers` siblings, `zoo sweep` runs on other machines pointed at
the same `--storage`) shares one study: a killed sweep resumes where it stopped, the grid of an
ablation never trains a point twice, and a trial whose worker died is failed by its heartbeat and
run again. `optuna-dashboard <storage URL>` shows the same study live.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sweeps.study import DEFAULT_STORAGE, STUDY_KINDS, StudyKind, SweepError
from zoo.errors import ArgumentParser


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="zoo sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study", choices=sorted(STUDY_KINDS), help="kind of study (default: from config)"
    )
    parser.add_argument("--config", required=True, help="YAML of the study (configs/sweeps/)")
    parser.add_argument("--storage", default=None, help=f"study storage URL ({DEFAULT_STORAGE})")
    parser.add_argument("--name", default=None, help="study name (default: the config's `name`)")
    parser.add_argument(
        "--backbone",
        default=None,
        help="the backbone a tuning study tunes (instead of the config's)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="training seeds of an ablation grid (instead of the config's; give a new --name)",
    )
    parser.add_argument("--n_trials", type=int, default=None, help="trials this worker runs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds this worker runs")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument(
        "--heartbeat", type=int, default=30, help="seconds between a trial's heartbeats"
    )
    parser.add_argument(
        "--grace", type=int, default=120, help="seconds without heartbeat before a trial is failed"
    )
    parser.add_argument("--max_retry", type=int, default=2, help="retries of a failed trial")
    return parser


@dataclasses.dataclass
class SweepSpec:
    """What `zoo sweep` needs from a study config file: its kind, name, storage, and the rest."""

    kind: str
    name: str
    storage: str
    config: Any  # AblationConfig | TuneConfig


def load_spec(
    path: str,
    *,
    kind: str | None,
    name: str | None,
    storage: str | None,
    backbone: str | None = None,
) -> SweepSpec:
    """Read and check a study config: `study`, `name` and `storage` keys, then the kind's fields.

    `backbone` sets a tuning study's backbone; `{backbone}` in its name and output is replaced by
    it, so one config serves every backbone (`darkroom_tune_{backbone}`)."""
    import yaml
    from jsonargparse import ArgumentParser as ConfigParser

    file = Path(path)
    if not file.is_file():
        raise SweepError(f"study config {path} does not exist")
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"study config {path} must be a YAML mapping")
    # the keys that say where and what the study is; the rest are the study kind's fields
    kind = kind or raw.get("study")
    name = name or raw.get("name") or file.stem
    storage = storage or raw.get("storage") or DEFAULT_STORAGE
    for key in ("study", "name", "storage"):
        raw.pop(key, None)
    if backbone is not None:
        if kind != "tune":
            raise SweepError("--backbone picks the backbone of a tuning study (study: tune)")
        raw["backbone"] = backbone
    if "backbone" in raw:
        name = name.replace("{backbone}", str(raw["backbone"]))
        if isinstance(raw.get("output"), str):
            raw["output"] = raw["output"].replace("{backbone}", str(raw["backbone"]))
    if kind not in STUDY_KINDS:
        raise SweepError(f"{path}: set `study:` to one of {sorted(STUDY_KINDS)} (or pass --study)")
    config_class = STUDY_KINDS[kind].config
    parser = ConfigParser(exit_on_error=False)
    parser.add_class_arguments(config_class, "config")
    try:
        parsed = parser.parse_object({"config": raw})
        config = parser.instantiate_classes(parsed).config
    except Exception as error:  # jsonargparse's messages name the bad key and the expected type
        raise SweepError(f"{path}: {str(error).strip().splitlines()[0]}") from error
    return SweepSpec(kind=kind, name=name, storage=storage, config=config)


def run(args: argparse.Namespace) -> int:
    import optuna

    from sweeps.study import grid_progress, open_storage, run_worker

    spec = load_spec(
        args.config, kind=args.study, name=args.name, storage=args.storage, backbone=args.backbone
    )
    if args.seeds is not None:
        if spec.kind != "ablation":
            raise SweepError("--seeds sets the seeds of an ablation grid; tuning has one seed")
        spec.config = dataclasses.replace(spec.config, seeds=list(args.seeds))
    if args.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # workers share the machine's cores rather than each taking all of them (children inherit)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    siblings = []
    for index in range(1, args.workers):  # the other workers are plain `zoo sweep` processes
        command = [sys.executable, "-m", "zoo.cli", "sweep", *_own_args(args, spec)]
        env = {**os.environ, "ZOO_SWEEP_SIBLING": "1", "ZOO_SWEEP_WORKER": str(index)}
        siblings.append(subprocess.Popen(command, env=env))
    module: StudyKind = STUDY_KINDS[spec.kind]
    storage = open_storage(
        spec.storage,
        heartbeat_interval=args.heartbeat,
        grace_period=args.grace,
        max_retry=args.max_retry,
    )
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction="maximize",
        sampler=module.sampler(spec.config),
        # no pruner means none: Optuna's default (a median pruner) is never chosen silently
        pruner=module.pruner(spec.config) if module.pruner else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    # this worker's own sampling stream: its index among the workers started together, and the
    # trials the study already has (a resumed worker does not redraw the points it drew before)
    worker = int(os.environ.get("ZOO_SWEEP_WORKER", "0"))
    stream = worker * 1_000_000 + len(study.get_trials(deepcopy=False))
    study.sampler = module.sampler(spec.config, stream=stream)
    study.set_user_attr("kind", spec.kind)
    study.set_user_attr("config", dataclasses.asdict(spec.config))
    space = spec.config.search_space() if hasattr(spec.config, "search_space") else None
    ran = run_worker(
        study,
        lambda trial: module.objective(trial, spec.config),
        n_trials=args.n_trials,
        timeout=args.timeout,
        max_retry=args.max_retry,
        search_space=space,
        poll_interval=max(1.0, args.heartbeat / 2),
    )
    codes = [p.wait() for p in siblings]
    if os.environ.get("ZOO_SWEEP_SIBLING"):
        return 0
    print(f"zoo sweep: this worker ran {ran} trial(s); study {spec.name!r} in {spec.storage}")
    if space is not None:
        print(f"zoo sweep: grid {grid_progress(study, space)}")
    print_status(study)
    if spec.kind == "tune" and spec.config.output:
        from sweeps.tune import write_tuned

        if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
            print(f"zoo sweep: tuned settings written to {write_tuned(study, spec.config)}")
    return 1 if any(codes) else 0


def _own_args(args: argparse.Namespace, spec: SweepSpec) -> list[str]:
    out = ["--study", spec.kind, "--config", args.config, "--storage", spec.storage]
    out += ["--name", spec.name, "--heartbeat", str(args.heartbeat), "--grace", str(args.grace)]
    out += ["--max_retry", str(args.max_retry)]
    if args.seeds is not None:
        out += ["--seeds", *map(str, args.seeds)]
    if args.backbone is not None:
        out += ["--backbone", args.backbone]
    if args.n_trials is not None:
        out += ["--n_trials", str(args.n_trials)]
    if args.timeout is not None:
        out += ["--timeout", str(args.timeout)]
    return out


STATUS_COLUMNS = (
    "return_final",
    "val_return_final",
    "selected_step",
    "steps_trained",
    "budget_capped",
    "parameters",
)
"""Trial attributes `zoo sweep status` shows beside Optuna's own columns."""


def status_table(study: Any) -> Any:
    """Optuna's `trials_dataframe` of the study: number, state, value, duration, params and the
    chosen attributes; grid duplicates say which trial holds their point."""
    import pandas as pd

    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "duration", "params", "user_attrs")
    )
    if frame.empty:
        return frame
    frame = frame.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    if "duplicate_of" in frame:
        duplicate = frame["duplicate_of"].notna()
        frame.loc[duplicate, "state"] = "DUPLICATE of " + frame.loc[
            duplicate, "duplicate_of"
        ].astype(int).astype(str)
    frame["seconds"] = pd.to_timedelta(frame.pop("duration")).dt.total_seconds().round(1)
    params = [c for c in frame.columns if c in {p for t in study.trials for p in t.params}]
    shown = [
        "number",
        "state",
        *params,
        "value",
        "seconds",
        *(c for c in STATUS_COLUMNS if c in frame),
    ]
    return frame[shown]


def print_status(study: Any) -> None:
    import pandas as pd

    table = status_table(study)
    if table.empty:
        print("(no trials yet)")
        return
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    counts = table["state"].str.split().str[0].value_counts().sort_index()
    print("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))


def status(argv: list[str]) -> int:
    import optuna

    from sweeps.study import grid_progress, open_storage

    parser = ArgumentParser(prog="zoo sweep status", description="a study's progress")
    parser.add_argument("--config", help="YAML of the study (for its name, storage and grid)")
    parser.add_argument("--storage", default=None, help=f"study storage URL ({DEFAULT_STORAGE})")
    parser.add_argument("--name", default=None, help="study name")
    parser.add_argument("--backbone", default=None, help="the backbone of a tuning study")
    args = parser.parse_args(argv)
    space = None
    if args.config:
        spec = load_spec(
            args.config, kind=None, name=args.name, storage=args.storage, backbone=args.backbone
        )
        name, storage_url = spec.name, spec.storage
        space = spec.config.search_space() if hasattr(spec.config, "search_space") else None
    else:
        if not args.name:
            parser.error("give --config or --name")
        name, storage_url = args.name, args.storage or DEFAULT_STORAGE
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    except KeyError as error:
        raise SweepError(f"no study named {name!r} in {storage_url}") from error
    print(f"study {name!r} in {storage_url}")
    if space is not None:
        print(f"grid: {grid_progress(study, space)}")
    print_status(study)
    return 0


def export(argv: list[str]) -> int:
    import optuna

    from sweeps.study import open_storage
    from sweeps.tune import write_tuned

    parser = ArgumentParser(
        prog="zoo sweep export", description="write a tuning study's chosen settings (YAML)"
    )
    parser.add_argument("--config", required=True, help="YAML of the tuning study")
    parser.add_argument("--storage", default=None, help=f"study storage URL ({DEFAULT_STORAGE})")
    parser.add_argument("--backbone", default=None, help="the backbone (instead of the config's)")
    parser.add_argument("--out", default=None, help="output file (default: the config's output)")
    args = parser.parse_args(argv)
    spec = load_spec(
        args.config, kind=None, name=None, storage=args.storage, backbone=args.backbone
    )
    if spec.kind != "tune":
        raise SweepError(
            f"{args.config} is a {spec.kind} study: only tuning studies choose settings"
        )
    try:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
    except KeyError as error:
        raise SweepError(f"no study named {spec.name!r} in {spec.storage}") from error
    print(f"wrote {write_tuned(study, spec.config, args.out)}")
    return 0


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["status"]:
            return status(argv[1:])
        if argv[:1] == ["export"]:
            return export(argv[1:])
        return run(_parser().parse_args(argv))
    except SweepError as error:
        print(f"zoo sweep: error: {error}", file=sys.stderr)
        return 2
