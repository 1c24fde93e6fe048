"""Optuna plumbing shared by every study: study configs, storage from a URL, create-or-resume,
workers, status. (Importing this module imports the `sweeps` package, which registers the kinds.)

A study lives in a storage that many `zoo sweep` workers share:
- `sqlite:///runs/sweeps.db` (the default) or any SQLAlchemy URL (`postgresql://user@host/db`):
  RDB storage with heartbeats, so a killed worker's trial is marked failed and retried;
- `journal:///path/to/study.log`: Optuna's file journal (no heartbeat: a killed worker's trial stays
  RUNNING; prefer an RDB URL for long sweeps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

DEFAULT_STORAGE = "sqlite:///runs/sweeps.db"


@dataclasses.dataclass(frozen=True)
class StudyKind:
    """What `zoo sweep` needs of a kind of study: its config dataclass (the fields of a study YAML
    besides `study`, `name` and `storage`), its sampler, objective and optional pruner. A config
    with a `search_space()` method is a grid: workers stop once every point is done."""

    config: type
    sampler: Callable[..., optuna.samplers.BaseSampler]
    objective: Callable[[optuna.Trial, Any], float]
    pruner: Callable[[Any], optuna.pruners.BasePruner] | None = None


STUDY_KINDS: dict[str, StudyKind] = {}
"""The registered kinds of study, by the name a study YAML gives as `study:`."""


def register_study_kind(name: str, kind: StudyKind) -> None:
    """Make a kind of study available to `zoo sweep` (call it where the kind is defined)."""
    if name in STUDY_KINDS and STUDY_KINDS[name] is not kind:
        raise ValueError(f"study kind {name!r} is already registered by {STUDY_KINDS[name]}")
    STUDY_KINDS[name] = kind


class SweepError(RuntimeError):
    """A problem with a sweep's configuration or storage, with a message that says what to fix."""


SQLITE_LOCK_SECONDS = 5
"""How long a SQLite storage waits for a lock another process holds before saying so."""


def open_storage(
    url: str = DEFAULT_STORAGE,
    *,
    heartbeat_interval: int = 30,
    grace_period: int = 120,
    max_retry: int = 2,
) -> BaseStorage:
    """The Optuna storage behind `url`, with heartbeats and retries of stale trials for RDB URLs."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalStorage

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(_journal_file(path))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        database = url.removeprefix("sqlite:///")
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes write one file: wait for the lock (their transactions take
        # milliseconds) instead of failing at once, but not for a lock held by something else
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_SECONDS}
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats and their retry are "experimental"
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=_retry(max_retry),
                    )
            except Exception as error:
                # two workers creating a fresh database at once: one of them loses the race to
                # create a table or write the schema version ("table studies already exists",
                # "alembic_version"); by the next attempt the schema is there
                lost_race = "alembic_version" in str(error) or "already exists" in str(error)
                if not lost_race or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")
    except ImportError as error:
        raise SweepError(
            f"storage {url!r} needs a database driver that is not installed ({error}); "
            'for PostgreSQL: pip install "psycopg[binary]"'
        ) from error
    except Exception as error:  # sqlalchemy's errors for bad URLs and unreachable servers
        if "database is locked" in str(error):
            raise SweepError(
                f"storage {url!r} is locked: another process has held it for over "
                f"{SQLITE_LOCK_SECONDS} s (an open sqlite3 shell, a hung worker): close it, or "
                "use a storage of your own (--storage)"
            ) from error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise SweepError(f"cannot open storage {url!r}: {first_line}") from error


def _journal_file(path: Path) -> Any:
    """Optuna's journal file, whose appends a signal does not cut and a cut write does not poison.

    A journal line is one log; a line without its newline (a write cut off by a full disk or a
    killed process) is ignored by readers only while it is the last line: the next append would
    glue a log to it and make the journal unreadable. So each append first removes such a tail
    (under the journal's lock, where no other writer is mid-line), and SIGINT/SIGTERM wait until
    the line is written and the lock let go (a lock left behind stalls every worker for its
    grace period)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    class JournalFile(JournalFileBackend):
        def __init__(self) -> None:
            self.lock = JournalFileSymlinkLock(str(path))
            super().__init__(str(path), lock_obj=self.lock)

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            # one hold of the lock for the mend and the append: no writer between them
            lines = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
            with _signals_held():
                while not self.lock.acquire():
                    time.sleep(0.01)
                try:
                    self._cut_incomplete_tail()
                    with open(path, "ab") as journal:
                        journal.write(lines.encode("utf-8"))
                        journal.flush()
                        os.fsync(journal.fileno())
                finally:
                    self.lock.release()

        def _cut_incomplete_tail(self) -> None:
            """Called under the journal's lock (`append_logs`)."""
            with open(path, "rb+") as journal:
                size = journal.seek(0, os.SEEK_END)
                if size == 0:
                    return
                journal.seek(size - 1)
                if journal.read(1) == b"\n":
                    return
                end = size - 1  # back to the last newline, a block at a time
                while end > 0:
                    start = max(0, end - 65536)
                    journal.seek(start)
                    found = journal.read(end - start).rfind(b"\n")
                    if found >= 0:
                        end = start + found + 1
                        break
                    end = start
                journal.truncate(end)
                print(
                    f"zoo sweep: {path}: removed an incomplete last line of {size - end} "
                    "bytes (a write cut off by a full disk or a killed process)",
                    file=sys.stderr,
                )

    return JournalFile()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM arriving inside are handled on the way out, by the handlers there were
    (a thread's signal mask would not do: a process's signal may go to any of its threads, and
    Python runs its handlers in the main thread whichever took it)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set, and only run, in the main thread
        return
    caught: list[tuple[int, Any]] = []
    previous = {
        number: signal.signal(number, lambda n, frame: caught.append((n, frame)))
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for signum, frame in caught[:1]:
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _retry(max_retry: int) -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def retry_failed_trials(max_retry: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An optimize() callback that re-queues a trial whose objective raised, at most `max_retry`
    times (the same bookkeeping as Optuna's retry of heartbeat-stale trials)."""
    retry = _retry(max_retry)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            retry(study, trial)

    return callback


def grid_points(search_space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every point of a grid, in a fixed order."""
    names = sorted(search_space)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(search_space[n] for n in names))
    ]


GRID_POINT = "grid_point"
"""User attribute of an enqueued grid trial: its point, recorded by the study itself (a waiting
trial has no params yet)."""


def _key(trial: FrozenTrial, names: Sequence[str]) -> tuple[Any, ...]:
    """The values of `names` of a trial (a waiting one: the grid point it was enqueued with)."""
    params = trial.params or trial.user_attrs.get(GRID_POINT, {})
    return tuple(params.get(name) for name in names)


def enqueue_grid(study: optuna.Study, points: Sequence[dict[str, Any]]) -> int:
    """Enqueue every point not yet in the study, in the given order (workers take waiting trials
    first in, first out): returns how many were enqueued."""
    names = sorted(points[0]) if points else []
    have = {_key(t, names) for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    count = 0
    for point in points:
        if tuple(point[n] for n in names) not in have:
            study.enqueue_trial(point, user_attrs={GRID_POINT: point})
            count += 1
    return count


def duplicate_of(trial: optuna.Trial, names: Sequence[str]) -> int | None:
    """The number of an earlier live trial (waiting, running or finished, not failed) with the same
    values of `names`, or None. Two workers can be handed the same grid point (after retries); the
    later one must not train it again."""
    key = tuple(trial.params.get(name) for name in names)
    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    for other in trial.study.get_trials(deepcopy=False, states=live):
        if (
            other.number < trial.number
            and "duplicate_of" not in other.user_attrs
            and _key(other, names) == key
        ):
            return other.number
    return None


def point_states(
    study: optuna.Study | None, search_space: Mapping[str, Sequence[Any]]
) -> dict[tuple[Any, ...], set[TrialState]]:
    """Each grid point (its values in the order of the sorted axis names) and the states of the
    study's trials at it, duplicates left out; a study not created yet (None) has none."""
    names = sorted(search_space)
    states: dict[tuple[Any, ...], set[TrialState]] = {
        tuple(p[name] for name in names): set() for p in grid_points(search_space)
    }
    for t in study.get_trials(deepcopy=False) if study is not None else []:
        if "duplicate_of" in t.user_attrs:
            continue
        key = _key(t, names)
        if key in states:
            states[key].add(t.state)
    return states


def point_done(states: set[TrialState]) -> bool:
    """Whether a grid point has a finished trial (complete, or pruned: the pruner's verdict)."""
    return TrialState.COMPLETE in states or TrialState.PRUNED in states


def grid_progress(study: optuna.Study, search_space: dict[str, Sequence[Any]]) -> dict[str, int]:
    """Counts of grid points by status: done, running, waiting, failed (no retry left), todo."""
    counts = dict.fromkeys(("done", "running", "waiting", "failed", "todo"), 0)
    for s in point_states(study, search_space).values():
        if point_done(s):
            counts["done"] += 1
        elif TrialState.RUNNING in s:
            counts["running"] += 1
        elif TrialState.WAITING in s:
            counts["waiting"] += 1
        elif TrialState.FAIL in s:
            counts["failed"] += 1
        else:
            counts["todo"] += 1
    return counts


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    max_retry: int = 2,
    search_space: dict[str, Sequence[Any]] | None = None,
    poll_interval: float = 5.0,
    study_trials: int | None = None,
) -> int:
    """Run trials of `study` until `n_trials` ran, `timeout` passed, (for a grid) every grid
    point is done, or the study has `study_trials` trials (complete, pruned or running: a failed
    one does not count, so it is made up). Returns the number of trials this worker ran.

    For a grid, a worker with nothing left to start waits for the trials other workers are
    running: a stale one (its worker died) is failed by the heartbeat and re-queued, and then run.
    """
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    callbacks = [retry_failed_trials(max_retry)]
    ran, waiting_said = 0, False
    while (n_trials is None or ran < n_trials) and time.monotonic() < deadline:
        if study_trials is not None and counted_trials(study) >= study_trials:
            break
        if search_space is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            progress = grid_progress(study, search_space)
            if progress["todo"] == 0 and progress["waiting"] == 0:
                if progress["running"] == 0:
                    break
                if not waiting_said:
                    print(
                        f"sweep: waiting for {progress['running']} trial(s) of other workers; "
                        "one whose worker died is re-queued once its heartbeat is stale",
                        flush=True,
                    )
                    waiting_said = True
                time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
                continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
        ran += 1
    return ran


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards a study's number of trials: finished (complete, pruned) or
    running. A waiting one (a failed trial's retry) does not: it takes the failed one's place."""
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=counted))


def fail_running(study: optuna.Study) -> list[int]:
    """Fail every RUNNING trial of `study` (their workers are gone: a stopped machine, a study
    resumed from a committed journal file, which has no heartbeat); a grid point is then run
    again. Returns their numbers. Only when no other worker of the study is alive."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        failed.append(trial.number)
        if GRID_POINT in trial.user_attrs:  # the point is run again, in its place in the queue
            point = trial.user_attrs[GRID_POINT]
            study.enqueue_trial(point, user_attrs={GRID_POINT: point})
    return failed


# ------------------------------------------------------------------ study configs and studies
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
    sets: Sequence[str] = (),
) -> SweepSpec:
    """Read and check a study config: `study`, `name` and `storage` keys, then the kind's fields.

    `backbone` sets a tuning study's backbone; `{backbone}` in its name and output is replaced by
    it, so one config serves every backbone (`darkroom_tune_{backbone}`). `sets` are
    `key=value` settings over the file's (`value` read as YAML; `fit.trainer.max_steps=300`
    reaches into a mapping): the same study with its records, tuned settings or outputs
    elsewhere, say."""
    import yaml
    from jsonargparse import ArgumentParser as ConfigParser

    file = Path(path)
    if not file.is_file():
        raise SweepError(f"study config {path} does not exist")
    from zoo.yaml_keys import check_unique_keys

    text = file.read_text()
    check_unique_keys(text, source=path)
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"study config {path} must be a YAML mapping")
    if isinstance(raw.get("evaluation"), str):  # a protocol file, as `zoo run --protocol` names it
        raw["evaluation"] = _protocol_fields(raw["evaluation"], source=path)
    for setting in sets:
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise SweepError(f"--set {setting!r}: give KEY=VALUE (e.g. records=runs/records)")
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SweepError(f"--set {setting!r}: {part} is not a mapping in {path}")
        node[last] = yaml.safe_load(value)
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


def _protocol_fields(protocol: str, *, source: str) -> dict[str, Any]:
    """The fields of the protocol file a study config names as its `evaluation:`."""
    import yaml

    from zoo.yaml_keys import check_unique_keys

    file = Path(protocol)
    if not file.is_file():
        raise SweepError(
            f"{source}: evaluation: {protocol} does not exist (see configs/protocols/)"
        )
    text = file.read_text()
    check_unique_keys(text, source=protocol)
    fields = yaml.safe_load(text) or {}
    if not isinstance(fields, dict):
        raise SweepError(f"{source}: evaluation: {protocol} is not a mapping of protocol fields")
    return fields


def create_study(spec: SweepSpec, storage: BaseStorage, *, worker: int = 0) -> optuna.Study:
    """Create the study of `spec` in `storage`, or load it if it exists, with this worker's own
    sampling stream: `worker` (its index among workers started together) and the trials the
    study already has (a resumed worker does not redraw the points it drew before)."""
    kind = STUDY_KINDS[spec.kind]
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction="maximize",
        sampler=kind.sampler(spec.config),
        # no pruner means none: Optuna's default (a median pruner) is never chosen silently
        pruner=kind.pruner(spec.config) if kind.pruner else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    check_same_study(study, spec)
    stream = worker * 1_000_000 + len(study.get_trials(deepcopy=False))
    study.sampler = kind.sampler(spec.config, stream=stream)
    if worker == 0 and hasattr(spec.config, "points"):  # a grid, in the order it should run
        enqueue_grid(study, spec.config.points())
    return study


UNCHECKED_FIELDS = ("runs_dir", "records", "output")
"""Study config fields a resumed study may change: where its local files go."""


def study_identity(spec: SweepSpec) -> dict[str, Any]:
    """What a study's trials must share to be one study: its kind, its config (less where its
    files go) and the fingerprint of the dataset it trains on (`data.path` of its experiment,
    or of its `fit:`), as the study records them at its creation."""
    import yaml

    config = {k: v for k, v in dataclasses.asdict(spec.config).items() if k not in UNCHECKED_FIELDS}
    data_path = None
    experiment = Path(str(config.get("experiment", "")))
    if experiment.is_file():
        data_path = ((yaml.safe_load(experiment.read_text()) or {}).get("data") or {}).get("path")
    data_path = ((config.get("fit") or {}).get("data") or {}).get("path", data_path)
    fingerprint = None
    if getattr(spec.config, "collection", None):
        data_path = None  # one collection per seed, made from the collect config (its digest)
    if data_path is not None:
        from datamodules.reader import open_dataset

        try:
            fingerprint = open_dataset(str(data_path)).manifest.fingerprint
        except Exception as error:  # no dataset yet, or a damaged one: the trial says which
            raise SweepError(
                f"the study's data {data_path} cannot be read ({str(error).splitlines()[0]}): "
                "collect it first (zoo collect --config configs/collect/...)"
            ) from error
    return {
        "kind": spec.kind,
        "config": config,
        "data_fingerprint": fingerprint,
        "file_digests": _file_digests(spec),
    }


def _file_digests(spec: SweepSpec) -> dict[str, str]:
    """sha256 of the files a study's trials read besides its own config, by their role (the
    experiment, each backbone's preset and tuned settings, a per-seed collect config), so that a
    clone at another path is the same study and an edit to one of them is another."""
    import hashlib

    from backbones.presets import preset_path

    config = spec.config
    backbones = getattr(config, "backbones", None) or [getattr(config, "backbone", None)]
    files = {"experiment": Path(str(getattr(config, "experiment", "")))}
    if getattr(config, "collection", None):
        files["collection"] = Path(config.collection)
    for backbone in filter(None, backbones):
        files[f"preset:{backbone}"] = Path(preset_path(backbone, config.size))
        if getattr(config, "tuned", None):
            files[f"tuned:{backbone}"] = Path(config.tuned) / f"{backbone}.yaml"
    return {
        role: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for role, path in files.items()
        if path.is_file()
    }


def _required(spec: SweepSpec) -> dict[str, Any]:
    """The config's fields without defaults (to build its default instance)."""
    return {
        f.name: getattr(spec.config, f.name)
        for f in dataclasses.fields(spec.config)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def check_same_study(study: optuna.Study, spec: SweepSpec) -> None:
    """Record the identity of a new study; refuse to resume one whose config or data changed
    (its trials would not be one experiment), naming what differs and how to start anew."""
    identity = json.loads(json.dumps(study_identity(spec)))  # as the storage returns it
    recorded = study.user_attrs.get("identity")
    legacy = study.user_attrs.get("config")
    if recorded is None and legacy is not None:
        # a study from before identities: its recorded config must still be this one
        ours = json.loads(json.dumps(dataclasses.asdict(spec.config)))
        changed = sorted(
            k
            for k in {*legacy, *ours}
            if k not in UNCHECKED_FIELDS and legacy.get(k) != ours.get(k)
        )
        if changed:
            raise SweepError(
                f"study {spec.name!r} was run with other settings ({', '.join(changed)} differ): "
                "restore its config, or start a new study with --name"
            )
    if recorded is None:
        study.set_user_attr("kind", spec.kind)
        study.set_user_attr("config", dataclasses.asdict(spec.config))
        study.set_user_attr("identity", identity)
        return
    if recorded == identity:
        return
    digests, ours = recorded.get("file_digests"), identity["file_digests"]
    if digests is not None:
        edited = sorted(role for role in {*digests, *ours} if digests.get(role) != ours.get(role))
        if edited:
            raise SweepError(
                f"study {spec.name!r} was run with other contents of its files ({', '.join(edited)}"
                "): restore them (git checkout), or start a new study with --name"
            )
    if recorded.get("data_fingerprint") != identity["data_fingerprint"]:
        raise SweepError(
            f"study {spec.name!r} was run on another collection of its data (fingerprint "
            f"{str(recorded.get('data_fingerprint'))[:12]}, the data now {str(identity['data_fingerprint'])[:12]}): "
            "restore that dataset (zoo collect with the study's collect config and seed), or start "
            "a new study with --name"
        )
    defaults = json.loads(json.dumps(dataclasses.asdict(type(spec.config)(**_required(spec)))))
    # a field added to the config since (at any depth: a new evaluation setting) is at its default
    defaults = {k: v for k, v in defaults.items() if k not in UNCHECKED_FIELDS}
    old, new = _with_defaults(recorded.get("config", {}), defaults), identity["config"]
    changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    if not changed and recorded.get("kind") == identity["kind"]:
        # the same study (a field added to the config since, at its default); one recorded
        # before its files' digests takes them now, every check passed
        if digests is None:
            study.set_user_attr("identity", {**recorded, "file_digests": ours})
        return
    raise SweepError(
        f"study {spec.name!r} was run with other settings ({', '.join(changed) or 'kind'} "
        "differ): restore its config, or start a new study with --name"
    )


def _with_defaults(recorded: Any, defaults: Any) -> Any:
    """A recorded config with the fields it lacks (at any depth) taken from the defaults of
    today's config: a study recorded before a field existed ran at that field's default."""
    if not isinstance(recorded, dict) or not isinstance(defaults, dict):
        return recorded
    filled = {k: _with_defaults(v, defaults.get(k)) for k, v in recorded.items()}
    return {**{k: v for k, v in defaults.items() if k not in recorded}, **filled}


def missing_storage(url: str) -> str | None:
    """Why a file storage (`sqlite:///`, `journal://`) is not there, or None: a reader (status,
    report) refuses it instead of creating an empty one at a mistyped path."""
    for prefix, what in (("sqlite:///", "database file"), ("journal://", "journal file")):
        path = url.removeprefix(prefix)
        if url.startswith(prefix) and path != ":memory:" and not Path(path).is_file():
            return f"no {what} {path} for {url}: give the --storage URL the sweep used"
    return None


def load_existing(name: str, storage_url: str) -> optuna.Study:
    """The study `name` in `storage_url`; a `SweepError` if there is none (a file storage that is
    not there is not created)."""
    missing = missing_storage(storage_url)
    if missing:
        raise SweepError(missing)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage_url))
    except KeyError as error:
        raise SweepError(f"no study named {name!r} in {storage_url}") from error


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
