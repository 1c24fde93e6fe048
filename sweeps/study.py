"""Optuna plumbing shared by every study: storage from a URL, create-or-resume, workers, status.

A study lives in a storage that many `zoo sweep` workers share:
- `sqlite:///runs/sweeps.db` (the default) or any SQLAlchemy URL (`postgresql://user@host/db`):
  RDB storage with heartbeats, so a killed worker's trial is marked failed and retried;
- `journal:///path/to/study.log`: Optuna's file journal (no heartbeat: a killed worker's trial stays
  RUNNING; prefer an RDB URL for long sweeps).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
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
    if name in STUDY_KINDS:
        raise ValueError(f"study kind {name!r} is registered twice")
    STUDY_KINDS[name] = kind


class SweepError(RuntimeError):
    """A problem with a sweep's configuration or storage, with a message that says what to fix."""


def open_storage(
    url: str = DEFAULT_STORAGE,
    *,
    heartbeat_interval: int = 30,
    grace_period: int = 120,
    max_retry: int = 2,
) -> BaseStorage:
    """The Optuna storage behind `url`, with heartbeats and retries of stale trials for RDB URLs."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes write one file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
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
                # write its schema version; by the next attempt the schema is there
                if "alembic_version" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")
    except ImportError as error:
        raise SweepError(
            f"storage {url!r} needs a database driver that is not installed ({error}); "
            'for PostgreSQL: pip install "psycopg[binary]"'
        ) from error
    except Exception as error:  # sqlalchemy's errors for bad URLs and unreachable servers
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise SweepError(f"cannot open storage {url!r}: {first_line}") from error


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


def grid_points(search_space: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every point of a grid, in a fixed order."""
    names = sorted(search_space)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(search_space[n] for n in names))
    ]


def _key(trial: FrozenTrial, names: Sequence[str]) -> tuple[Any, ...]:
    """The values of `names` of a trial; a waiting (enqueued) trial has them as fixed params."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    return tuple(params.get(name) for name in names)


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


def grid_progress(study: optuna.Study, search_space: dict[str, Sequence[Any]]) -> dict[str, int]:
    """Counts of grid points by status: done, running, waiting, failed (no retry left), todo."""
    names = sorted(search_space)
    states: dict[tuple[Any, ...], set[TrialState]] = {
        tuple(p[name] for name in names): set() for p in grid_points(search_space)
    }
    for t in study.get_trials(deepcopy=False):
        if "duplicate_of" in t.user_attrs:
            continue
        key = _key(t, names)
        if key in states:
            states[key].add(t.state)
    counts = dict.fromkeys(("done", "running", "waiting", "failed", "todo"), 0)
    for s in states.values():
        if TrialState.COMPLETE in s or TrialState.PRUNED in s:
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
) -> int:
    """Run trials of `study` until `n_trials` ran, `timeout` passed, or (for a grid) every grid
    point is done. Returns the number of trials this worker ran.

    For a grid, a worker with nothing left to start waits for the trials other workers are
    running: a stale one (its worker died) is failed by the heartbeat and re-queued, and then run.
    """
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    callbacks = [retry_failed_trials(max_retry)]
    ran, waiting_said = 0, False
    while (n_trials is None or ran < n_trials) and time.monotonic() < deadline:
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
