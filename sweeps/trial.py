"""One sweep trial, the worker's side: its protocol (`EvaluationSettings`), the child process that
trains, selects and plays it (`sweeps.child`), its record, and a recorded trial run again.

The child builds everything through the same LightningCLI as `zoo fit` (no second way to build a
model), selects its checkpoint on the validation goals, and plays the test goals with it through
the same code as `zoo evaluate`. A child process per trial gives each trial its own peak memory
reading and keeps a crashing trial from taking the worker down; it dies with its worker
(PR_SET_PDEATHSIG), so a killed worker leaves only a stale trial, which the heartbeat fails and
re-queues. The child never talks to the study: it writes its validation returns by global step to
a file, and the worker, which owns the trial, reports them through Optuna's public API and stops
the child when the pruner says so.

    python -m sweeps.child SPEC.json    (what the worker runs; SPEC is written by `run_trial`)
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
from typing import TYPE_CHECKING, Any, Literal, cast

import optuna

from zoo.errors import UserError

if TYPE_CHECKING:
    from zoo.evaluation import Evaluation

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
    split: Literal["test", "lockbox", "ood"] = "test"
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
    val_episodes: int | None = None
    """In-context episodes of each validation play; None: `episodes` (the checkpoint is chosen by
    the return that is reported). Fewer: chosen after fewer episodes than are reported."""
    val_repeats: int = 4
    """Every validation goal is played this many times at each validation (other action samples,
    in one vectorised env, so for about the time of one): a less noisy selection signal."""
    patience: int = 0
    """Validations without a better `val/return_final` before training stops; 0: never stop
    early (train to `--trainer.max_steps`)."""
    test: bool = True
    """Play the held-out split with the selected checkpoint; false for tuning, whose objective is the
    best validation return (tuning never sees a test task)."""
    budgets: list[int] = dataclasses.field(default_factory=list)
    """Training-step budgets below the cap (`--trainer.max_steps`, always one): the best-validation
    checkpoint within each is kept and plays the held-out split, so rankings at several budgets
    come from the same runs (`zoo.selection.BudgetCheckpoints`)."""
    lockbox: bool = False
    """The checkpoint chosen at the cap also plays the env's `lockbox` split (a second held-out
    split, carved before collection: the grid worlds' `lockbox_fraction`), once per evaluation
    seed, recorded beside the test play; nothing is chosen on it."""
    paired: bool = False
    """Every training seed plays the held-out split under the same evaluation `seeds` (a paired
    comparison, the stated purpose); false: training seed s plays under `eval_seeds(s)`, seeds of
    its own, so the spread over runs includes what another evaluation seed would show."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("evaluation.seeds must list at least one seed")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError(f"evaluation.tasks must be >= 1 (or null), got {self.tasks}")
        if self.val_episodes is not None and self.val_episodes < 1:
            raise ValueError(
                f"evaluation.val_episodes must be >= 1 (or null), got {self.val_episodes}"
            )
        if self.val_repeats < 1:
            raise ValueError(f"evaluation.val_repeats must be >= 1, got {self.val_repeats}")
        if self.patience < 0:
            raise ValueError(f"evaluation.patience must be >= 0, got {self.patience}")
        if any(b < 1 for b in self.budgets):
            raise ValueError(f"evaluation.budgets must be >= 1 step each, got {self.budgets}")

    def validation(self, seed: int) -> Evaluation:
        """How a run's validation tasks are played at every validation: every one of them,
        `val_repeats` times, under the training `seed`."""
        from zoo.evaluation import Evaluation

        return Evaluation(
            episodes=self.val_episodes or self.episodes,
            mode=self.mode,
            split="val",
            final_episodes=self.final_episodes,
            seed=seed,
            repeats=self.val_repeats,
        )

    def held_out(self, seed: int, split: str | None = None) -> Evaluation:
        """One play of a chosen checkpoint on the held-out `split` (default: this protocol's)
        under evaluation `seed`."""
        from zoo.evaluation import Evaluation

        return Evaluation(
            episodes=self.episodes,
            tasks=self.tasks,
            mode=self.mode,
            split=cast(Any, split or self.split),
            final_episodes=self.final_episodes,
            seed=seed,
        )

    def eval_seeds(self, training_seed: int) -> list[int]:
        """The evaluation seeds of a run with `training_seed`: `seeds` when `paired`, else
        `1000 * training_seed + s` for each s of `seeds` (training seed 0 keeps `seeds`)."""
        if self.paired:
            return list(self.seeds)
        return [1000 * training_seed + s for s in self.seeds]


class ProtocolError(UserError, ValueError):
    """A protocol file that cannot be used: one line that says what to fix."""


class RunFailed(UserError, RuntimeError):
    """A run's child process ended without its record: its log's last line says why."""


RECORD = "record.json"
"""File in a trial's run directory (and, for a study with `records:`, in the repository): the
trial's one record (see `run_trial`)."""
RECORD_FORMAT = 1
CODE = "code.json"
"""File in a trial's run directory: the code the child runs (`sweeps.provenance.code_version`),
written as it starts, so that a pruned or failed trial's record says it too."""
RUN_FILES = (RECORD, "result.json", INTERMEDIATE, CODE)
"""What the child writes into a run directory: removed before a run (a retried trial's, a
rerun's), so that nothing of an earlier run is read as this one's."""


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
    axes: Mapping[str, Any] | None = None,
    records: str | None = None,
    tuned_from: str | None = None,
) -> float:
    """Train and evaluate one configuration in a child process; its objective (the final
    in-context return on the test tasks, or the best validation return when `evaluation.test`
    is false). The child trains what `zoo fit` would on these configs, in this order: the
    experiment, the backbone's preset, the trial's context and seed, its run directory, then
    `overrides` (config files such as tuned settings, and mappings such as a study's `fit:`).

    Whatever its end (complete, pruned, failed), the trial leaves one record, `record.json` in
    its run directory and `<records>/trial-<n>.json` when `records` is given: its `axes` (by
    config path), the resolved `zoo fit` settings, the protocol, the validation curve, the
    checkpoint chosen within each budget and its test returns per evaluation seed and task, the
    source learner's curve, cost, and the commands that rerun it."""
    run_dir = Path(runs_dir) / trial.study.study_name / f"trial-{trial.number:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # each trial logs into its own directory: concurrent trials never share a logger's versions
    logger = _csv_logger(run_dir)
    configs: list[str | Mapping[str, Any]] = [
        experiment,
        {
            "model": {"backbone": str(backbone_preset)},  # a preset file, as experiments name it
            # a training seed varies the initialisation and, through the data's seed, the
            # validation carve, the window order and the validation windows
            "data": {"context_episodes": context_episodes, "seed": seed},
            "seed_everything": seed,
        },
        # one device per trial (a study's `fit:` may say otherwise): on a multi-GPU node
        # Lightning's `auto` would make every trial a DDP run over all GPUs, every rank acting
        {"trainer": {"default_root_dir": str(run_dir), "logger": logger, "devices": 1}},
        *overrides,
    ]
    spec = {
        "configs": configs,
        "evaluation": dataclasses.asdict(evaluation),
        "run_dir": str(run_dir),
        "seed": seed,
        "axes": dict(axes or {}),
        "tuned_from": tuned_from,
    }
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    trial.set_user_attr("run_dir", str(run_dir))
    for stale in RUN_FILES:  # a retried trial's old files
        (run_dir / stale).unlink(missing_ok=True)
    started = time.monotonic()
    log_path = run_dir / "trial.log"
    code, usage, pruned_at = _watch(trial, run_dir / "spec.json", log_path)
    wall = round(time.monotonic() - started, 1)
    trial.set_user_attr("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))
    trial.set_user_attr("wall_seconds", wall)
    result_path = run_dir / "result.json"
    finished = pruned_at is None and code == 0 and result_path.is_file()
    record = _trial_record(trial, spec, run_dir, finished=finished, pruned_at=pruned_at)
    record.setdefault("cost", {}).update(
        wall_seconds=wall, peak_rss_mb=round(usage.ru_maxrss / 1024, 1)
    )
    if pruned_at is not None:
        record["pruned_at"] = pruned_at
    write_json(run_dir / RECORD, record)
    if records is not None:
        write_json(Path(records) / f"trial-{trial.number:04d}.json", record)
        trial.set_user_attr("record", str(Path(records) / f"trial-{trial.number:04d}.json"))
    if pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at step {pruned_at} on its validation return")
    if not finished:
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        raise RuntimeError(f"trial exited with code {code}: {last} (log: {log_path})")
    result = json.loads(result_path.read_text())
    for key, value in result["attrs"].items():
        trial.set_user_attr(key, value)
    return float(result["attrs"]["objective"])


def _watch(trial: optuna.Trial, spec_path: Path, log_path: Path) -> tuple[int, Any, int | None]:
    """Run the trial's child to its end: (exit code, resource usage, the step at which the
    pruner stopped it or None). This process owns the trial: the child writes its validation
    returns to a file, this loop reports them to the study and stops the child when the pruner
    says so."""
    reports = spec_path.parent / INTERMEDIATE
    pruned_at = None
    with log_path.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "sweeps.child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
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
    return os.waitstatus_to_exitcode(status), usage, pruned_at


def _trial_record(
    trial: optuna.Trial,
    spec: Mapping[str, Any],
    run_dir: Path,
    *,
    finished: bool,
    pruned_at: int | None,
) -> dict[str, Any]:
    """The trial's one record whatever its end, before its cost: the child's (a finished
    trial's) or what the trial was and its validation so far, under the study, trial, kind,
    state and parameters."""
    if finished:
        record = json.loads((run_dir / RECORD).read_text())
    else:
        record = _partial_record(spec, run_dir / INTERMEDIATE)
        if (run_dir / CODE).is_file():
            record["code"] = json.loads((run_dir / CODE).read_text())
    record = {
        "study": trial.study.study_name,
        # the study's kind: a report tells a validation-only grid from a tuning by it
        "kind": trial.study.user_attrs.get("kind"),
        "trial": trial.number,
        "state": "COMPLETE" if finished else "PRUNED" if pruned_at is not None else "FAIL",
        "params": dict(trial.params),
        **record,
    }
    return record


def _data_mode(configs: Sequence[Any]) -> str | None:
    """`data.mode` as the mappings among a trial's configs set it (the last one wins), else None
    (an experiment file's own: the child's resolved settings say it)."""
    mode = None
    for config in configs:
        if isinstance(config, Mapping):
            mode = (config.get("data") or {}).get("mode", mode)
    return mode


def validation_summary(curve: list[list[Any]]) -> dict[str, Any]:
    """A run's validation curve `[[step, value], ...]`, its peak and its last point."""
    points = [(int(step), float(value)) for step, value in curve]
    numbers = [p for p in points if p[1] == p[1]]  # a NaN validation is never the peak
    peak = max(numbers, key=lambda p: p[1]) if numbers else None
    return {
        "curve": [list(p) for p in points],
        "peak": None if peak is None else {"step": peak[0], "value": peak[1]},
        "final": None if not points else {"step": points[-1][0], "value": points[-1][1]},
    }


def _record_head(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What every record of a trial starts with, whatever its end: what the trial was."""
    return {
        "format": RECORD_FORMAT,
        "axes": spec.get("axes", {}),
        "seed": int(spec["seed"]),
        "tuned_from": spec.get("tuned_from"),
    }


def _partial_record(spec: Mapping[str, Any], reports: Path) -> dict[str, Any]:
    """The record of a trial that did not finish (pruned, failed): what it was and its
    validation curve so far."""
    curve = [[step, value] for step, value in _intermediate(reports)]
    return {
        **_record_head(spec),
        "data_mode": _data_mode(spec["configs"]),
        "configs": spec["configs"],
        "protocol": spec["evaluation"],
        "validation": validation_summary(curve),
    }


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


def load_protocol(path: str | Path, **overrides: Any) -> EvaluationSettings:
    """A protocol file (`configs/protocols/<family>.yaml`: the fields of `EvaluationSettings`, how a
    run of the family is selected and played), with `overrides` over its fields."""
    import yaml

    from zoo.yaml_keys import check_unique_keys

    file = Path(path)
    if not file.is_file():
        raise ProtocolError(f"protocol {path} does not exist (see configs/protocols/)")
    text = file.read_text()
    check_unique_keys(text, source=str(path))
    fields = yaml.safe_load(text) or {}
    known = {f.name for f in dataclasses.fields(EvaluationSettings)}
    if not isinstance(fields, dict) or set(fields) - known:
        unknown = sorted(set(fields) - known) if isinstance(fields, dict) else "not a mapping"
        raise ProtocolError(f"protocol {path}: unknown field(s) {unknown} (known: {sorted(known)})")
    try:
        return EvaluationSettings(**{**fields, **overrides})
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"protocol {path}: {error}") from None


def run_record(
    configs: Sequence[str | Mapping[str, Any]],
    *,
    protocol: EvaluationSettings,
    seed: int,
    out: Path,
    axes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One run end to end, as a sweep trial runs it but outside a study: `zoo fit` on `configs`
    (in order, then the training `seed` and the output folder `out`), the checkpoint chosen on
    the validation tasks within each budget of `protocol`, its held-out plays under each
    evaluation seed, and the run's record (`out/record.json`), returned."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "configs": [
            *configs,
            # a training seed varies the initialisation and, through the data's seed, the
            # validation carve, the window order and the validation windows
            {"data": {"seed": seed}, "seed_everything": seed},
            # one device, as a trial: its budgets' branches and held-out plays run on rank 0 alone
            {"trainer": {"default_root_dir": str(out), "logger": _csv_logger(out), "devices": 1}},
        ],
        "evaluation": dataclasses.asdict(protocol),
        "run_dir": str(out),
        "seed": seed,
        "axes": dict(axes or {}),
        "tuned_from": None,
    }
    return _run_child(spec, out)


def rerun(record_path: Path, out: Path) -> dict[str, Any]:
    """Train, select and evaluate a recorded trial again from its record alone (its resolved
    `zoo fit` settings, protocol, seed and thread count), in a child process as the trial ran, into
    `out`; the new record. `compare_records` says whether it is the same to the digit."""
    record = json.loads(Path(record_path).read_text())
    if record.get("state", "COMPLETE") != "COMPLETE" or "settings" not in record:
        raise ValueError(
            f"{record_path}: a {record.get('state', 'unknown')} trial's record holds no complete "
            "run to repeat (only complete trials are rerun)"
        )
    fields = {f.name for f in dataclasses.fields(EvaluationSettings)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        # the resolved settings, less the config files they were read from (they are resolved)
        "configs": [
            {k: v for k, v in record["settings"].items() if k != "config"},
            {"trainer": {"default_root_dir": str(out), "logger": _csv_logger(out)}},
        ],
        "evaluation": {k: v for k, v in record["protocol"].items() if k in fields},
        "run_dir": str(out),
        "seed": record["seed"],
        "axes": record.get("axes", {}),
        "tuned_from": record.get("tuned_from"),
    }
    threads = (record.get("cost") or {}).get("threads")
    return _run_child(spec, out, threads=threads)


def _csv_logger(out: Path) -> dict[str, Any]:
    return {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(out), "name": "csv", "version": 0},
    }


def _run_child(spec: dict[str, Any], out: Path, *, threads: int | None = None) -> dict[str, Any]:
    """`spec` run by the child process (`sweeps.child`) as a trial's is, its output in `out/`
    (log: `trial.log`), at `threads` threads (None: this process's OMP_NUM_THREADS); the record."""
    (out / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    for stale in RUN_FILES:
        (out / stale).unlink(missing_ok=True)
    threads_text = str(threads or os.environ.get("OMP_NUM_THREADS", ""))
    env = {**os.environ, **({"OMP_NUM_THREADS": threads_text} if threads_text else {})}
    with (out / "trial.log").open("w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "sweeps.child", str(out / "spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    if done.returncode != 0 or not (out / RECORD).is_file():
        lines = [line for line in (out / "trial.log").read_text().splitlines() if line.strip()]
        raise RunFailed(
            f"the run exited with code {done.returncode}: {lines[-1] if lines else 'no output'} "
            f"(log: {out / 'trial.log'})"
        )
    return json.loads((out / RECORD).read_text())


def compare_records(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Where two records of one trial disagree on a result: the validation curve, each budget's
    choice and its test play, the lockbox, the steps trained; empty when the same to the digit."""

    def same(a: Any, b: Any) -> bool:  # as the records hold them: a NaN equals a NaN
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    differ = [
        k
        for k in ("steps_trained", "validation", "branches", "lockbox")
        if not same(old.get(k), new.get(k))
    ]
    old_budgets, new_budgets = old.get("budgets") or {}, new.get("budgets") or {}
    for budget in sorted({*old_budgets, *new_budgets}, key=int):
        a, b = old_budgets.get(budget) or {}, new_budgets.get(budget) or {}
        differ += [
            f"budgets.{budget}.{p}" for p in ("step", "val", "test") if not same(a.get(p), b.get(p))
        ]
    return differ


MONITOR = "val/return_final"
"""The validation metric every trial selects, stops, prunes and tunes on."""


def yaml_safe(value: Any) -> Any:
    """A config as plain JSON types (paths and other objects as strings)."""
    if isinstance(value, Mapping):
        return {str(k): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [yaml_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_json(path: Path, value: Any) -> None:
    """`value` as JSON at `path`, atomically (`datamodules.storage.write_json_atomic`); a mapping
    one top-level key a line, so that records diff line by line."""
    from datamodules.storage import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, value, dumps=_one_key_a_line)


def _one_key_a_line(value: Any) -> str:
    if not isinstance(value, Mapping):
        return json.dumps(value)
    lines = [f" {json.dumps(str(k))}: {json.dumps(v)}" for k, v in value.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


if __name__ == "__main__":  # what workers started before `sweeps.child` existed still run
    import runpy

    runpy.run_module("sweeps.child", run_name="__main__", alter_sys=True)
