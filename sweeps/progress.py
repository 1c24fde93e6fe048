"""How far a study of several stages has come, and how long the rest takes at the pace of the
committed records: one line, printed by `scripts/study.sh` while its workers run.

    python -m sweeps.progress --workers 2 --pace results/darkroom \
        --tune_storage journal://runs/study/tune.journal configs/sweeps/darkroom_tune.yaml:gru ...

Each run is `CONFIG[:BACKBONE]` (a tuning study names its backbone), in its config's storage or
the one given for its kind (`--tune_storage`, `--check_storage`, `--study_storage`). Every trial
still to run is costed from the finished trials among the committed records under `--pace`
(its `tune`, `check` and `study` folders), so a fresh machine's estimate rests on measured
trials, not on a guess (`estimate`):
- a tuning trial (its length is the pruner's): the mean wall time of its backbone's finished
  tuning trials, else of every finished tuning trial;
- a grid trial (it trains to the cap, and its decay branches): the mean of its own cell's
  committed trials (same study, backbone and context); else the wall time a training step of its
  backbone at its context, times the steps it trains; else at a longer context, as a range (the
  step time there at most, its tokens' share at least); else the same from every backbone's.
  Priced from tuning or check trials, a grid trial's held-out plays (test goals at each budget,
  the lockbox) are left out: low, until its cell's own trials are committed.
The line says how many trials each rule costed; trials nothing committed can cost make the ETA
a floor ("at least"), or unknown. Times on a shared machine are what they were: the ETA is as
good as the load is alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from sweeps.study import (
    SweepError,
    SweepSpec,
    load_existing,
    load_spec,
    point_done,
    point_states,
)

FINISHED = ("COMPLETE", "PRUNED")
KINDS = ("tune", "check", "study")
"""The folders of committed records under `--pace`, one per kind of study."""
UNCOSTED = "nothing committed to go by"


@dataclasses.dataclass(frozen=True)
class Measured:
    """One committed finished trial: its study, cell and cost."""

    study: str
    tuning: bool
    backbone: str
    context: float
    steps: int
    """Training steps, its decay branches' included."""
    seconds: float


def measured(root: Path) -> list[Measured]:
    """Every finished trial with a wall time among the records under `root`'s kind folders."""
    found = []
    for kind in KINDS:
        folder = root / kind
        for path in sorted(folder.rglob("trial-*.json")) if folder.is_dir() else []:
            record = json.loads(path.read_text())
            wall = (record.get("cost") or {}).get("wall_seconds")
            axes = record.get("axes") or {}
            study, backbone = record.get("study"), axes.get("model.backbone")
            context = axes.get("data.context_episodes")
            if (
                record.get("state") not in FINISHED
                or not wall
                or None in (study, backbone, context)
            ):
                continue  # unfinished, or a record without its cost or cell: nothing to go by
            found.append(
                Measured(
                    study=str(study),
                    tuning=kind == "tune",
                    backbone=str(backbone),
                    context=float(context),  # type: ignore[arg-type]  # None: skipped above
                    steps=int(record.get("steps_trained") or 0)
                    + int(record.get("branch_steps") or 0),
                    seconds=float(wall),
                )
            )
    return found


@dataclasses.dataclass(frozen=True)
class Todo:
    """A trial still to run: its study and cell, and the steps it trains."""

    study: str
    backbone: str
    context: float | None
    """None: a tuning trial, whose length the pruner decides (`steps` 0)."""
    steps: int = 0


def estimate(todo: Todo, trials: Sequence[Measured]) -> tuple[float, float, str] | None:
    """(seconds at least, seconds at most, the rule that costed it) of a trial still to run,
    from the committed trials; None when there are none to go by. The two differ only where the
    trial's context has no committed trial: a step there is priced as at a longer context (at
    most) and by its tokens (at least: a step's fixed costs left out)."""
    if todo.context is None:  # a tuning trial
        tuning = [t for t in trials if t.tuning]
        rules = [
            ("its backbone's tuning trials", [t for t in tuning if t.backbone == todo.backbone]),
            ("every tuning trial", tuning),
        ]
        for rule, pool in rules:
            if pool:
                return _mean(pool), _mean(pool), rule
        return None
    cell = (todo.study, todo.backbone, todo.context)
    own = [t for t in trials if (t.study, t.backbone, t.context) == cell]
    if own:
        return _mean(own), _mean(own), "its cell's own trials"
    if todo.steps <= 0:  # no cap to train to: nothing to price its steps by
        return None
    same = [t for t in trials if t.steps > 0 and t.context == todo.context]
    longer = [t for t in trials if t.steps > 0 and t.context > todo.context]
    pools = [
        ("its backbone's step time at its context", same, todo.backbone, False),
        ("its backbone's step time at a longer context", longer, todo.backbone, True),
        ("every backbone's step time at its context", same, None, False),
        ("every backbone's step time at a longer context", longer, None, True),
    ]
    for rule, pool, backbone, scaled in pools:
        chosen = [t for t in pool if backbone in (None, t.backbone)]
        if not chosen:
            continue
        per_step = sum(t.seconds for t in chosen) / sum(t.steps for t in chosen)
        if not scaled:
            return per_step * todo.steps, per_step * todo.steps, rule
        per_token = sum(t.seconds for t in chosen) / sum(t.steps * t.context for t in chosen)
        return per_token * todo.steps * todo.context, per_step * todo.steps, rule
    return None


def _mean(trials: Sequence[Measured]) -> float:
    return sum(t.seconds for t in trials) / len(trials)


def stage_of(spec: SweepSpec) -> str:
    """The stage a study belongs to: `tuning`, `check` (a grid that plays nothing held out),
    `ED` or `grid`."""
    if spec.kind == "tune":
        return "tuning"
    if not spec.config.evaluation.test:
        return "check"
    mode = ((spec.config.fit or {}).get("data") or {}).get("mode")
    return "ED" if mode == "ed" else "grid"


def to_run(spec: SweepSpec) -> tuple[int, list[Todo]]:
    """(finished trials, the trials still to run) of one study; a study not created yet has none
    finished."""
    try:
        study: optuna.Study | None = load_existing(spec.name, spec.storage)
    except SweepError:  # not created yet
        study = None
    if spec.kind == "tune":
        trials = study.get_trials(deepcopy=False) if study is not None else []
        finished = [
            t for t in trials if t.state.name in FINISHED and "duplicate_of" not in t.user_attrs
        ]
        total = int(spec.config.trials or 0)
        done = min(len(finished), total)
        return done, [Todo(spec.name, spec.config.backbone, None)] * (total - done)
    space = spec.config.search_space()
    states = point_states(study, space)
    names = sorted(space)
    steps = {b: planned_steps(spec, b) for b in spec.config.backbones}
    todos = [
        Todo(
            spec.name, point["backbone"], float(point["context_episodes"]), steps[point["backbone"]]
        )
        for point in spec.config.points()
        if not point_done(states[tuple(point[name] for name in names)])
    ]
    return len(states) - len(todos), todos


def planned_steps(spec: SweepSpec, backbone: str) -> int:
    """The training steps of a grid trial of `backbone` that runs to its cap: the cap, and under
    `wsd` each budget below it trained again as its own decay branch (the settings the trial
    trains with: `AblationConfig.resolved`)."""
    from zoo.schedules import decay_start

    def setting(path: str) -> Any:
        return spec.config.resolved(path, backbone)

    cap = int(setting("trainer.max_steps") or 0)
    if setting("model.schedule") != "wsd":
        return cap
    cooldown = setting("model.cooldown")
    if cooldown is None:  # the model's default
        import inspect

        from zoo.model import InContextLearner

        cooldown = inspect.signature(InContextLearner).parameters["cooldown"].default
    return cap + sum(
        b - decay_start(b, float(cooldown)) for b in set(spec.config.evaluation.budgets) if b < cap
    )


def progress_line(specs: Sequence[SweepSpec], *, workers: int, trials: Sequence[Measured]) -> str:
    """`study progress HH:MM: tuning 14/96, grid 0/120, ED 0/40 trials; about N h left ...`:
    every trial still to run costed from the committed `trials` (`estimate`)."""
    done: dict[str, list[int]] = {}
    rules: dict[str, Counter[str]] = {}
    low = high = 0.0
    for spec in specs:
        finished, todos = to_run(spec)
        stage = stage_of(spec)
        tally = done.setdefault(stage, [0, 0])
        tally[0] += finished
        tally[1] += finished + len(todos)
        for todo in todos:
            least, most, rule = estimate(todo, trials) or (0.0, 0.0, UNCOSTED)
            low, high = low + least, high + most
            rules.setdefault(stage, Counter())[rule] += 1
    uncosted = sum(counted[UNCOSTED] for counted in rules.values())
    left = sum(sum(counted.values()) for counted in rules.values())
    stages = ", ".join(f"{stage} {f}/{t}" for stage, (f, t) in done.items())
    notes = "; ".join(
        f"{stage}: " + ", ".join(f"{n} by {rule}" for rule, n in counted.items())
        for stage, counted in rules.items()
    )
    low, high = (seconds / max(workers, 1) / 3600 for seconds in (low, high))
    if uncosted == left > 0:
        eta = f"an unknown time left ({uncosted} trials, nothing committed to cost them by)"
    elif uncosted:  # what could not be costed is not 0 s: the sum is a floor
        eta = f"at least {low:.1f} h left (+{uncosted} trials not costed)"
    elif f"{low:.1f}" == f"{high:.1f}":
        eta = f"about {low:.1f} h left"
    else:
        eta = f"about {low:.1f}-{high:.1f} h left"
    return (
        f"study progress {time.strftime('%H:%M')}: {stages} trials; {eta} on "
        f"{workers} worker(s) at the pace of {len(trials)} committed trials ({notes or 'none left'})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="CONFIG[:BACKBONE] of each study")
    parser.add_argument("--tune_storage", default=None, help="tuning studies' storage")
    parser.add_argument("--check_storage", default=None, help="validation-only studies' storage")
    parser.add_argument("--study_storage", default=None, help="the other studies' storage")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pace", type=Path, default=Path("results/darkroom"),
                        help="committed records: <pace>/tune, <pace>/check and <pace>/study")  # fmt: skip
    args = parser.parse_args(argv)
    specs = []
    for run in args.runs:
        config, _, backbone = run.partition(":")
        spec = load_spec(config, kind=None, name=None, storage=None, backbone=backbone or None)
        storage = {"tuning": args.tune_storage, "check": args.check_storage}.get(
            stage_of(spec), args.study_storage
        )
        specs.append(dataclasses.replace(spec, storage=storage) if storage else spec)
    print(progress_line(specs, workers=args.workers, trials=measured(args.pace)), flush=True)


if __name__ == "__main__":
    main()
