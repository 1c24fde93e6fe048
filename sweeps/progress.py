"""How far a study of several stages has come, and how long the rest takes at the pace of the
committed records: one line, printed by `scripts/study.sh` while its workers run.

    python -m sweeps.progress --workers 2 --pace results/darkroom \
        --tune_storage journal://runs/study/tune.journal configs/sweeps/darkroom_tune.yaml:gru ...

Each run is `CONFIG[:BACKBONE]` (a tuning study names its backbone), in its config's storage or
the one given for its kind (`--tune_storage`, `--check_storage`, `--study_storage`). A stage's pace is the mean wall time of the finished trials (complete or
pruned) among the committed records of that kind of study under `--pace` (`tune`, `check`, `study`
folders), so a fresh machine's estimate rests on measured trials, not on a guess; a stage with
no committed trial yet takes the pace of one that has, and says so. Times on a shared machine are
what they were: the ETA is as good as the load is alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps.study import SweepSpec, load_spec, missing_storage, open_storage

FINISHED = ("COMPLETE", "PRUNED")


def pace(records: Path) -> tuple[float, int] | None:
    """Mean wall seconds of the finished trials among the records under `records`, and their
    count; None when there are none."""
    seconds = []
    for path in sorted(records.rglob("trial-*.json")) if records.is_dir() else []:
        record = json.loads(path.read_text())
        wall = (record.get("cost") or {}).get("wall_seconds")
        if record.get("state") in FINISHED and wall:
            seconds.append(float(wall))
    return (sum(seconds) / len(seconds), len(seconds)) if seconds else None


def stage_of(spec: SweepSpec) -> str:
    """The stage a study belongs to: `tuning`, `check` (a grid that plays nothing held out),
    `ED` or `grid`."""
    if spec.kind == "tune":
        return "tuning"
    if not spec.config.evaluation.test:
        return "check"
    mode = ((spec.config.fit or {}).get("data") or {}).get("mode")
    return "ED" if mode == "ed" else "grid"


def counts(spec: SweepSpec) -> tuple[int, int]:
    """(finished trials, trials the study needs) of one study; a study not created yet has none
    finished."""
    total = int(spec.config.trials or 0) if spec.kind == "tune" else len(spec.config.points())
    if missing_storage(spec.storage):
        return 0, total
    import optuna

    try:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
    except KeyError:
        return 0, total
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.name in FINISHED and "duplicate_of" not in t.user_attrs
    ]
    return min(len(finished), total), total


def progress_line(
    specs: Sequence[SweepSpec], *, workers: int, paces: dict[str, tuple[float, int] | None]
) -> str:
    """`study progress HH:MM: tuning 14/96, grid 0/120, ED 0/40; ETA ...` for the studies."""
    done: dict[str, list[int]] = {}
    for spec in specs:
        finished, total = counts(spec)
        tally = done.setdefault(stage_of(spec), [0, 0])
        tally[0] += finished
        tally[1] += total
    known = [p for p in paces.values() if p is not None]
    fallback = known[0] if known else None
    left_seconds, notes = 0.0, []
    for stage, (finished, total) in done.items():
        measured = paces.get({"tuning": "tune", "check": "check"}.get(stage, "study"))
        used = measured or fallback
        if used is None:
            notes.append(f"{stage}: no committed trial to time")
            continue
        left_seconds += (total - finished) * used[0]
        source = "" if measured else ", the other stage's pace: none of its own committed yet"
        notes.append(f"{stage} {used[0]:.0f} s a trial (mean of {used[1]}{source})")
    stages = ", ".join(f"{stage} {f}/{t}" for stage, (f, t) in done.items())
    eta = left_seconds / max(workers, 1) / 3600
    return (
        f"study progress {time.strftime('%H:%M')}: {stages} trials; about {eta:.1f} h left on "
        f"{workers} worker(s) at the committed records' pace ({'; '.join(notes)})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="CONFIG[:BACKBONE] of each study")
    parser.add_argument("--tune_storage", default=None, help="tuning studies' storage")
    parser.add_argument("--check_storage", default=None, help="validation-only studies' storage")
    parser.add_argument("--study_storage", default=None, help="the other studies' storage")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pace", type=Path, default=Path("results/darkroom"),
                        help="committed records: <pace>/tune and <pace>/study")  # fmt: skip
    args = parser.parse_args(argv)
    specs = []
    for run in args.runs:
        config, _, backbone = run.partition(":")
        spec = load_spec(config, kind=None, name=None, storage=None, backbone=backbone or None)
        storage = {"tuning": args.tune_storage, "check": args.check_storage}.get(
            stage_of(spec), args.study_storage
        )
        specs.append(dataclasses.replace(spec, storage=storage) if storage else spec)
    paces: dict[str, Any] = {kind: pace(args.pace / kind) for kind in ("tune", "check", "study")}
    print(progress_line(specs, workers=args.workers, paces=paces), flush=True)


if __name__ == "__main__":
    main()
