"""Model selection never looks at a test goal: the in-training in-context evaluation plays the
run's validation goals (training-distribution goals whose histories it never trained on), and the
checkpoint kept is the one with the best validation return."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cli import main as zoo
from datamodules.reader import open_dataset
from envs import make_family
from zoo import evaluation as in_context
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


def test_a_wsd_branch_is_the_run_of_its_budget_to_the_digit(
    dataset: Path, tiny_fit_args, tmp_path: Path, one_thread: None
) -> None:
    """Under warm-up-stable-decay a 4-step run is an 8-step run's checkpoint at step 2 (where the
    4-step run's decay starts), trained on to 4 under its own decay: the weights are the same."""
    wsd = ["--model.schedule=wsd", "--model.cooldown=0.5", "--model.min_lr_ratio=0"]
    wsd.append("--model.token_mask=0.3")  # training draws random numbers: the RNG must agree too
    assert zoo(["fit", *tiny_fit_args(dataset, tmp_path / "short", *wsd, max_steps=4)]) == 0
    budgets = [
        "--trainer.callbacks+=zoo.selection.BudgetCheckpoints",
        f"--trainer.callbacks.dirpath={tmp_path / 'selected'}",
        "--trainer.callbacks.budgets=[4]",
        "--trainer.callbacks.monitor=val/return_final",
        "--trainer.callbacks.cooldown=0.5",
    ]
    long = tiny_fit_args(dataset, tmp_path / "long", *wsd, *budgets, max_steps=8)
    assert zoo(["fit", *long]) == 0
    start = tmp_path / "selected" / "branch-step2.ckpt"
    assert torch.load(start, weights_only=True)["global_step"] == 2
    branch = tiny_fit_args(dataset, tmp_path / "branch", *wsd, f"--ckpt_path={start}", max_steps=4)
    assert zoo(["fit", *branch]) == 0
    (short,) = (tmp_path / "short").rglob("last.ckpt")
    (branched,) = (tmp_path / "branch").rglob("last.ckpt")
    ours, theirs = (torch.load(c, weights_only=True) for c in (branched, short))
    assert ours["global_step"] == theirs["global_step"] == 4
    assert ours["lr_schedulers"][0]["_last_lr"] == [0.0, 0.0]  # decayed to the end
    for name, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], value), name


class _Trainer:
    """What `BudgetCheckpoints` reads of a trainer: its step, the metric, checkpoint writes."""

    sanity_checking, is_global_zero = False, True

    def __init__(self, max_steps: int) -> None:
        self.max_steps, self.global_step, self.callback_metrics = max_steps, 0, {}

    def save_checkpoint(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(str(self.global_step))


def _validate(chooser, trainer: _Trainer, curve: list[tuple[int, float]]) -> None:
    for step, value in curve:
        trainer.global_step = step
        chooser.on_train_batch_end(trainer, None, None, None, 0)
        trainer.callback_metrics = {"val/return_final": torch.tensor(value)}
        chooser.on_validation_end(trainer, None)


def test_each_budget_keeps_its_best_validation_and_a_nan_never_blocks_a_choice(
    tmp_path: Path,
) -> None:
    from zoo.selection import BudgetCheckpoints

    chooser = BudgetCheckpoints(tmp_path, [2, 4], monitor="val/return_final")
    trainer = _Trainer(max_steps=8)
    chooser.setup(trainer, None, "fit")  # the cap joins the budgets
    _validate(chooser, trainer, [(1, float("nan")), (2, 1.0), (3, 3.0), (4, 2.0), (6, 2.5)])
    assert {b: c["step"] for b, c in chooser.selected().items()} == {2: 2, 4: 3, 8: 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step2.ckpt", "step3.ckpt"]
    assert chooser.branches() == {}  # a constant rate: no decay branch


def test_under_wsd_a_budget_counts_validations_up_to_its_branch_point(tmp_path: Path) -> None:
    from zoo.selection import BudgetCheckpoints, merge

    chooser = BudgetCheckpoints(tmp_path, [4], monitor="val/return_final", cooldown=0.5)
    trainer = _Trainer(max_steps=8)
    chooser.setup(trainer, None, "fit")
    assert chooser.branches() == {4: tmp_path / "branch-step2.ckpt"}
    _validate(chooser, trainer, [(1, 1.0), (2, 0.5), (3, 5.0), (8, 4.0)])
    # step 3 is past budget 4's branch point (2): the 4-step run decays from there instead
    assert {b: c["step"] for b, c in chooser.selected().items()} == {4: 1, 8: 3}
    assert (tmp_path / "branch-step2.ckpt").read_text() == "2"
    trunk = chooser.selected()[4]
    branch = {"step": 4, "value": 2.0, "checkpoint": "b", "branch_from": 2}
    assert merge(trunk, branch) is branch and merge(trunk, {**branch, "value": 1.0}) is trunk
    assert merge(None, branch) is branch and merge(trunk, None) is trunk
