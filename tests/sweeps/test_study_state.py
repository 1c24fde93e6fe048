"""The bookkeeping of a study that lives across sessions: a failed trial's retry is run even when
the study has its number of trials counted, a tuning study chooses from exactly its first
`trials` finished trials, and a grid with extra axes recognises a duplicate point."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.study import counted_trials, run_worker


def test_a_waiting_retry_is_run_even_when_the_count_is_reached() -> None:
    study = optuna.create_study(direction="maximize")
    for value in range(11):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": float(value)},
                distributions={"x": optuna.distributions.FloatDistribution(0, 20)},
                value=float(value),
            )
        )
    study.enqueue_trial({"x": 3.0})  # a failed trial's retry
    assert counted_trials(study) == 11
    ran = run_worker(study, lambda t: t.suggest_float("x", 0, 20), study_trials=12)
    assert ran == 1 and counted_trials(study) == 12
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 0
    assert run_worker(study, lambda t: t.suggest_float("x", 0, 20), study_trials=12) == 0


def test_a_grid_with_extra_axes_recognises_a_duplicate_point(tmp_path) -> None:
    from sweeps.ablation import AblationConfig, objective
    from sweeps.study import GRID_POINT

    config = AblationConfig(
        experiment="configs/experiments/darkroom.yaml",
        backbones=["gru"],
        context_episodes=[1.0],
        axes={"data.train_tasks": [2]},
        runs_dir=str(tmp_path),
    )
    study = optuna.create_study(direction="maximize")
    point = {"backbone": "gru", "context_episodes": 1.0, "seed": 0, "data.train_tasks": 2}
    for _ in range(2):
        study.enqueue_trial(point, user_attrs={GRID_POINT: point})
    first = study.ask()  # the first holds the point (running), the second is its duplicate
    study.optimize(lambda t: objective(t, config), n_trials=1)
    (second,) = [t for t in study.trials if t.number != first.number]
    assert second.state == TrialState.PRUNED and second.user_attrs["duplicate_of"] == first.number


def test_a_journal_cut_mid_line_is_mended_and_a_signal_waits_for_the_line(tmp_path) -> None:
    """A write cut off (a full disk, a killed worker) leaves a line without its newline; the next
    append must not glue a log to it. SIGTERM during an append is delivered once the line is
    whole."""
    import json
    import os
    import signal

    import optuna

    from sweeps.study import open_storage
    from zoo.errors import Terminated

    path = tmp_path / "study.journal"
    url = f"journal://{path}"
    optuna.create_study(study_name="s", storage=open_storage(url))
    with path.open("ab") as journal:
        journal.write(b'{"op_code": 4, "worker_id": "cut", "study_id"')  # no newline: cut off
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    study.set_user_attr("after", 1)  # an append after the cut
    assert all(json.loads(line) for line in path.read_bytes().splitlines())
    assert optuna.load_study(study_name="s", storage=open_storage(url)).user_attrs == {"after": 1}

    def stop(signum, frame):  # what `zoo` does with SIGTERM
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    lock = optuna.storages.journal.JournalFileSymlinkLock
    real_acquire = lock.acquire

    def acquire_then_signal(self):  # SIGTERM the moment the journal's lock is taken
        taken = real_acquire(self)
        os.kill(os.getpid(), signal.SIGTERM)
        return taken

    try:
        lock.acquire = acquire_then_signal
        with pytest.raises(Terminated):
            study.set_user_attr("during", 2)
    finally:
        lock.acquire = real_acquire
        signal.signal(signal.SIGTERM, previous)
    assert not [p for p in tmp_path.iterdir() if "lock" in p.name]  # the lock was let go
    assert path.read_bytes().endswith(b"\n")
    assert optuna.load_study(study_name="s", storage=open_storage(url)).user_attrs["during"] == 2
