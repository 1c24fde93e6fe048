"""The bookkeeping of a study that lives across sessions: a failed trial's retry is run even when
the study has its number of trials counted, a tuning study chooses from exactly its first
`trials` finished trials, and a grid with extra axes recognises a duplicate point."""

from __future__ import annotations

import optuna
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
