"""Model selection never looks at a test goal: the in-training in-context evaluation plays the
run's validation goals (training-distribution goals whose histories it never trained on), and the
checkpoint kept is the one with the best validation return."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.storage import open_dataset
from envs import make_family
from zoo import evaluation as in_context
from zoo.cli import main as zoo
from zoo.model import load_learner


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("selection") / "data"
    args = ["--env", "darkroom", "--num_tasks", "8", "--episodes", "4", "--output", str(path)]
    assert zoo(["collect", *args, "--no_progress"]) == 0
    return path


@pytest.fixture
def played(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The task arrays of every in-context evaluation run while the test runs."""
    tasks_played: list[np.ndarray] = []
    real = in_context.run_in_context

    def spy(model, family, tasks, **kwargs):  # type: ignore[no-untyped-def]
        tasks_played.append(np.asarray(tasks))
        return real(model, family, tasks, **kwargs)

    monkeypatch.setattr(in_context, "run_in_context", spy)
    return tasks_played


def rows(tasks: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in np.asarray(tasks)}


def test_selection_plays_validation_goals_only(
    tiny_fit_args, dataset: Path, tmp_path: Path, played: list[np.ndarray]
) -> None:
    root = tmp_path / "runs"
    args = tiny_fit_args(dataset, root, max_steps=4, every=2)
    args += ["--data.val_fraction=0.25", "--trainer.callbacks+=zoo.evaluation.InContextEvaluation"]
    args += ["--trainer.callbacks.episodes=2"]
    args += ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"]
    args += ["--trainer.callbacks.monitor=val/return_final", "--trainer.callbacks.mode=max"]
    args += ["--trainer.callbacks.filename=selected-step{step}"]
    assert zoo(["fit", *args]) == 0
    assert len(played) == 2  # the validations at steps 2 and 4

    data = open_dataset(dataset)
    family = make_family("darkroom")
    test = rows(family.sample_tasks("test", family.split_size("test"), seed=0))
    (selected,) = root.glob("**/selected-step*.ckpt")
    model = load_learner(str(selected))
    val = rows(model.env["val_tasks"])
    trained_on = rows(data.tasks[np.unique(data.task_index)]) - val
    assert len(val) == 2 and len(trained_on) == 6
    for tasks in played:
        assert rows(tasks) == val  # every validation goal, once
        assert not rows(tasks) & test  # no test goal
        assert not rows(tasks) & trained_on  # no goal whose histories were trained on
    saved = torch.load(selected, weights_only=True)
    assert any("val/return_final" in str(k) for k in saved["callbacks"])


def test_validation_tasks_are_recorded_and_evaluable(tiny_fit_args, dataset, tmp_path) -> None:
    root = tmp_path / "runs"
    assert zoo(["fit", *tiny_fit_args(dataset, root, "--data.val_fraction=0.25")]) == 0
    (last,) = root.glob("**/last.ckpt")
    out = tmp_path / "eval"
    assert zoo(["evaluate", str(last), "--split=val", "--episodes=2", f"--out={out}"]) == 0
    import json

    result = json.loads((out / "returns.json").read_text())
    assert rows(result["tasks"]) == rows(load_learner(str(last)).env["val_tasks"])


def test_repeats_play_every_validation_goal_that_many_times(
    tiny_fit_args, dataset: Path, tmp_path: Path, played: list[np.ndarray]
) -> None:
    args = tiny_fit_args(dataset, tmp_path / "runs", max_steps=2, every=2)
    args += ["--data.val_fraction=0.25", "--trainer.callbacks+=zoo.evaluation.InContextEvaluation"]
    args += ["--trainer.callbacks.episodes=1", "--trainer.callbacks.repeats=3"]
    assert zoo(["fit", *args]) == 0
    (tasks,) = played
    assert len(tasks) == 2 * 3 and len(rows(tasks)) == 2
