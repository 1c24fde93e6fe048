"""`zoo sweep`: run an Optuna study of the zoo, show its progress, or export what it chose.

    zoo sweep run --config configs/sweeps/darkroom_ablation.yaml [--workers 2]
    zoo sweep status --config configs/sweeps/darkroom_ablation.yaml
    zoo sweep run --config configs/sweeps/darkroom_tune.yaml --backbone gru --n_trials 5
    zoo sweep export --config configs/sweeps/darkroom_tune.yaml --backbone gru [--out FILE]
    zoo sweep tuned --config configs/sweeps/darkroom_tune.yaml --dir configs/tuned/darkroom \
        --backbones gru lstm     # which tuned files are not at this protocol, and why

A tuning study's chosen settings are written to its config's `output:` when the study ends (and by
`zoo sweep export`): the `zoo fit` config fragment an ablation's `tuned:` directory holds.

Every worker (this process, its `--workers` siblings, `zoo sweep run` on other machines pointed at
the same `--storage`) shares one study: a killed sweep resumes where it stopped, the grid of an
ablation never trains a point twice, and a trial whose worker died is failed by its heartbeat and
run again. `optuna-dashboard <storage URL>` shows the same study live.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any

from jsonargparse import Namespace

from cli import Parser

STORAGE_HELP = "study storage URL (null: the config's `storage`, else sqlite:///runs/sweeps.db)"


def _study_options(parser: Parser, *, config_required: bool) -> None:
    parser.add_argument(
        "--config", type=str | None, required=config_required, default=None,
        help="YAML of the study (configs/sweeps/)",
    )  # fmt: skip
    parser.add_argument("--storage", type=str | None, default=None, help=STORAGE_HELP)
    parser.add_argument("--backbone", type=str | None, default=None,
                        help="the backbone a tuning study tunes (instead of the config's)")  # fmt: skip


def parser() -> Parser:
    return Parser(prog="zoo sweep", description=__doc__.split("\n\n")[0])


def subcommands(parser: Parser) -> None:
    commands = parser.add_subcommands(required=True, dest="subcommand")

    run = Parser(description="run trials of a study (create it, or resume it)")
    _study_options(run, config_required=True)
    run.add_argument("--study", type=str | None, default=None,
                     help="kind of study (null: the config's `study`)")  # fmt: skip
    run.add_argument("--name", type=str | None, default=None,
                     help="study name (null: the config's `name`)")  # fmt: skip
    run.add_argument("--seeds", type=int, nargs="+", default=None,
                     help="training seeds of an ablation grid (instead of the config's; give a "
                     "new --name)")  # fmt: skip
    run.add_argument("--backbones", type=str, nargs="+", default=None,
                     help="backbones of an ablation grid (instead of the config's; give a new "
                     "--name)")  # fmt: skip
    run.add_argument("--context_episodes", type=float, nargs="+", default=None,
                     help="training contexts of an ablation grid, in episodes (instead of the "
                     "config's; give a new --name)")  # fmt: skip
    run.add_argument("--set", type=str, nargs="+", default=None, dest="sets",
                     help="KEY=VALUE ... over the config's settings, each value as YAML, e.g. "
                     "--set records=runs/study/records tuned=runs/study/tuned (a dotted KEY "
                     "reaches into a mapping: fit.trainer.max_steps=300)")  # fmt: skip
    run.add_argument("--n_trials", type=int | None, default=None, help="trials this worker runs")
    run.add_argument("--timeout", type=float | None, default=None, help="seconds this worker runs")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    run.add_argument("--heartbeat", type=int, default=30, help="seconds between heartbeats")
    run.add_argument("--grace", type=int, default=120,
                     help="seconds without heartbeat before a trial is failed")  # fmt: skip
    run.add_argument("--max_retry", type=int, default=2, help="retries of a failed trial")
    run.add_argument("--fail_running", type=bool, default=False,
                     help="first fail the study's RUNNING trials: no other worker of it is alive "
                     "(a study resumed from a committed journal file, whose stopped workers left "
                     "their trials running); their points are run again")  # fmt: skip
    commands.add_subcommand("run", run, help="run trials of a study")

    status = Parser(description="a study's progress: its trials and, for a grid, what is left")
    _study_options(status, config_required=False)
    status.add_argument("--name", type=str | None, default=None,
                        help="study name (null: the config's `name`)")  # fmt: skip
    commands.add_subcommand("status", status, help="a study's progress")

    rerun = Parser(description="train, select and evaluate a committed trial again from its record "
                   "alone, and say whether its results are the same to the digit (exit 0) or "
                   "where they differ (exit 1)")  # fmt: skip
    rerun.add_argument("record", type=str, help="a trial record (results/.../trial-NNNN.json)")
    rerun.add_argument("--out", type=str, required=True, help="run directory of the rerun")
    commands.add_subcommand("rerun", rerun, help="rerun a committed trial from its record")

    export = Parser(description="write a tuning study's chosen settings (a `zoo fit` fragment)")
    _study_options(export, config_required=True)
    export.add_argument("--out", type=str | None, default=None,
                        help="output file (null: the config's `output`)")  # fmt: skip
    commands.add_subcommand("export", export, help="write a tuning study's chosen settings")

    tuned = Parser(description="one line `backbone: why` for each backbone whose tuned file is not "
                   "its finished tuning at this tuning config's protocol (its `# tuning:` line "
                   "names the study, trial count, pruner, seeds, context and cap); nothing for "
                   "those that are. What scripts/study.sh asks before it tunes or runs a study")  # fmt: skip
    tuned.add_argument("--config", type=str, required=True, help="YAML of the tuning study")
    tuned.add_argument("--dir", type=str, required=True, help="folder of the tuned files")
    tuned.add_argument("--backbones", type=str, nargs="+", required=True)
    commands.add_subcommand("tuned", tuned, help="which tuned files are not at this protocol")


def run(options: Namespace, argv: list[str]) -> int:
    subcommand = options.subcommand
    commands = {"run": _run, "status": _status, "export": _export, "rerun": _rerun, "tuned": _tuned}
    return commands[subcommand](options[subcommand])


def _rerun(args: Namespace) -> int:
    import json
    from pathlib import Path

    from sweeps.provenance import code_differences
    from sweeps.study import SweepError
    from sweeps.trial import compare_records, rerun

    path = Path(args.record)
    if not path.is_file():
        raise SweepError(f"no trial record {path}")
    try:
        new = rerun(path, Path(args.out))
    except ValueError as error:
        raise SweepError(str(error)) from None
    old = json.loads(path.read_text())
    differ = compare_records(old, new)
    # the code that made the record against the rerun's (its commit, edits, package versions)
    code = code_differences(old.get("code"), new.get("code") or {})
    out = Path(args.out) / "record.json"
    if not differ:
        print(f"zoo sweep rerun: {path} repeated to the digit (record: {out})")
        if code:
            print(f"  by other code than the record's: {'; '.join(code)}")
        return 0
    print(f"zoo sweep rerun: {path} differs in {', '.join(differ)} (record: {out})")
    print(
        f"  the code then and now: {'; '.join(code)}"
        if code
        else "  the same commit and package versions as the record's: the difference comes from "
        "elsewhere (the machine, its threads, the data)"
    )
    return 1


GRID_OPTIONS = ("backbones", "context_episodes", "seeds")
"""Options that replace an ablation grid's axes (AblationConfig fields of the same names)."""


def _run(args: Namespace) -> int:
    from sweeps.study import (
        STUDY_KINDS,
        create_study,
        fail_running,
        grid_progress,
        load_spec,
        open_storage,
        run_worker,
    )

    spec = load_spec(
        args.config,
        kind=args.study,
        name=args.name,
        storage=args.storage,
        backbone=args.backbone,
        sets=args.sets or (),
    )
    _grid_options(spec, args)
    if spec.kind == "ablation" and not os.environ.get("ZOO_SWEEP_SIBLING"):
        for seed, backbones in spec.config.seeds_tuned_on().items():
            print(
                f"zoo sweep: note: training seed {seed} is the seed the tuned settings of "
                f"{', '.join(backbones)} were chosen on: its results carry that choice "
                '(docs/protocol.md, "Seeds"); report seeds the settings were not tuned on',
                file=sys.stderr,
            )
    # a stopped worker (SIGTERM: a scheduler, a session's end; `cli.main` makes it an
    # interrupt) fails its running trial through Optuna's own handling of an interrupt, instead
    # of leaving it RUNNING in a heartbeat-less journal; the interrupt then ends the command
    if args.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # workers share the machine's cores rather than each taking all of them (children inherit)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    storage = open_storage(
        spec.storage,
        heartbeat_interval=args.heartbeat,
        grace_period=args.grace,
        max_retry=args.max_retry,
    )
    study = create_study(spec, storage, worker=int(os.environ.get("ZOO_SWEEP_WORKER", "0")))
    if args.fail_running and not os.environ.get("ZOO_SWEEP_SIBLING"):
        failed = fail_running(study)
        if failed:
            print(f"zoo sweep: failed {len(failed)} orphaned running trial(s): {failed}")
    _one_gpu_per_worker(int(os.environ.get("ZOO_SWEEP_WORKER", "0")))
    siblings = []  # started after the orphans are failed: theirs would be failed too
    for index in range(1, args.workers):  # the other workers are plain `zoo sweep run` processes
        command = [sys.executable, "-m", "cli", "sweep", "run", *_own_args(args, spec)]
        env = {**os.environ, "ZOO_SWEEP_SIBLING": "1", "ZOO_SWEEP_WORKER": str(index)}
        siblings.append(subprocess.Popen(command, env=env))
    kind = STUDY_KINDS[spec.kind]
    space = spec.config.search_space() if hasattr(spec.config, "search_space") else None
    try:
        ran = run_worker(
            study,
            lambda trial: kind.objective(trial, spec.config),
            n_trials=args.n_trials,
            timeout=args.timeout,
            max_retry=args.max_retry,
            search_space=space,
            poll_interval=max(1.0, args.heartbeat / 2),
            study_trials=getattr(spec.config, "trials", None),
        )
    except BaseException:
        for sibling in siblings:  # stopped: the siblings stop too (and fail their trials)
            sibling.terminate()
        raise
    codes = [p.wait() for p in siblings]
    if os.environ.get("ZOO_SWEEP_SIBLING"):
        return 0
    print(f"zoo sweep: this worker ran {ran} trial(s); study {spec.name!r} in {spec.storage}")
    if space is not None:
        print(f"zoo sweep: grid {grid_progress(study, space)}")
    print_status(study)
    if spec.kind == "tune" and spec.config.output:
        _export_when_tuned(study, spec.config)
    return 1 if any(codes) else 0


def _grid_options(spec: Any, args: Namespace) -> None:
    """`--backbones`, `--context_episodes`, `--seeds` in place of an ablation config's axes."""
    from sweeps.study import SweepError

    grid = {k: getattr(args, k) for k in GRID_OPTIONS if getattr(args, k) is not None}
    if not grid:
        return
    if spec.kind != "ablation":
        options = ", ".join(f"--{k}" for k in grid)
        raise SweepError(f"{options} set an ablation grid's axes; a tuning study has none")
    try:
        spec.config = dataclasses.replace(spec.config, **{k: list(v) for k, v in grid.items()})
    except (ValueError, FileNotFoundError) as error:  # an unknown backbone, a context <= 0
        raise SweepError(str(error)) from error


def _export_when_tuned(study: Any, config: Any) -> None:
    """Write a tuning study's chosen settings once it has all its trials (complete or pruned),
    at least one of them complete."""
    from sweeps.tune import write_tuned

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    wanted = config.trials
    if any(t.state.name == "COMPLETE" for t in done) and (wanted is None or len(done) >= wanted):
        print(f"zoo sweep: tuned settings written to {write_tuned(study, config)}")


def _one_gpu_per_worker(worker: int) -> None:
    """On a machine with several GPUs, worker i trains its trials on GPU i mod N (its children
    inherit `CUDA_VISIBLE_DEVICES`), unless the user has chosen the devices."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return
    import torch

    count = torch.cuda.device_count()
    if count > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(worker % count)


def _own_args(args: Namespace, spec: Any) -> list[str]:
    """This worker's options, for its siblings (the study resolved: kind, name, storage)."""
    out = ["--study", spec.kind, "--config", args.config, "--storage", spec.storage]
    out += ["--name", spec.name, "--heartbeat", str(args.heartbeat), "--grace", str(args.grace)]
    out += ["--max_retry", str(args.max_retry)]
    for option in GRID_OPTIONS:
        if getattr(args, option) is not None:
            out += [f"--{option}", *map(str, getattr(args, option))]
    if args.backbone is not None:
        out += ["--backbone", args.backbone]
    if args.sets:
        out += ["--set", *args.sets]
    if args.n_trials is not None:
        out += ["--n_trials", str(args.n_trials)]
    if args.timeout is not None:
        out += ["--timeout", str(args.timeout)]
    return out


def print_status(study: Any) -> None:
    import pandas as pd

    from sweeps.study import status_table

    table = status_table(study)
    if table.empty:
        print("(no trials yet)")
        return
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    counts = table["state"].str.split().str[0].value_counts().sort_index()
    print("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))


def _status(args: Namespace) -> int:
    from sweeps.study import DEFAULT_STORAGE, grid_progress, load_existing, load_spec
    from zoo.errors import UsageError

    grid_config = None  # an ablation's config: its grid is shown
    if args.config:
        spec = load_spec(
            args.config, kind=None, name=args.name, storage=args.storage, backbone=args.backbone
        )
        name, storage_url = spec.name, spec.storage
        grid_config = spec.config if hasattr(spec.config, "search_space") else None
    else:
        if not args.name:
            raise UsageError("give --config or --name")
        name, storage_url = args.name, args.storage or DEFAULT_STORAGE
    study = load_existing(name, storage_url)
    print(f"study {name!r} in {storage_url}")
    if grid_config is not None:
        # the grid the study was run on: its workers' `--backbones`/`--context_episodes`/`--seeds`
        # may have replaced the config file's axes, and the study records what they ran
        ran = study.user_attrs.get("config", {})
        axes = {k: ran[k] for k in GRID_OPTIONS if k in ran}
        space = dataclasses.replace(grid_config, **axes).search_space()
        print(f"grid: {grid_progress(study, space)}")
    print_status(study)
    return 0


def _export(args: Namespace) -> int:
    from sweeps.study import SweepError, load_existing, load_spec
    from sweeps.tune import write_tuned

    spec = load_spec(
        args.config, kind=None, name=None, storage=args.storage, backbone=args.backbone
    )
    if spec.kind != "tune":
        raise SweepError(
            f"{args.config} is a {spec.kind} study: only tuning studies choose settings"
        )
    study = load_existing(spec.name, spec.storage)
    print(f"wrote {write_tuned(study, spec.config, args.out)}")
    return 0


def _tuned(args: Namespace) -> int:
    from pathlib import Path

    from sweeps.study import SweepError, load_spec
    from sweeps.tune import untuned_reason

    for backbone in args.backbones:
        spec = load_spec(args.config, kind=None, name=None, storage=None, backbone=backbone)
        if spec.kind != "tune":
            raise SweepError(f"{args.config} is a {spec.kind} study, not a tuning study")
        why = untuned_reason(Path(args.dir) / f"{backbone}.yaml", spec.config, spec.name)
        if why:
            print(f"{backbone}: {why}")
    return 0
