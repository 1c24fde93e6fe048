"""One run, one place, one set of settings: a second `zoo fit` on a run folder in use is refused,
and a resume that disagrees with its checkpoint's settings is refused with the keys named (a
resume keeps the checkpoint's model, so the options would be silently ignored), unless the change
is one a resume may make, which it says."""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path

import pytest

from cli import main as zoo


def test_a_second_fit_on_a_folder_in_use_is_refused(
    tmp_path: Path,
    six_task_dataset: Path,
    tiny_fit_args: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    root = tmp_path / "run"
    root.mkdir()
    with (root / ".zoo-fit.lock").open("a+") as held:  # the first run, still training
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert zoo(["fit", *tiny_fit_args(six_task_dataset, root)]) == 2
    assert "another zoo fit is running in" in capsys.readouterr().err
    assert not list(root.rglob("*.ckpt"))  # it trained nothing
    assert zoo(["fit", *tiny_fit_args(six_task_dataset, root)]) == 0  # once the first has ended


def test_a_resume_with_other_settings_is_refused_naming_them(
    tmp_path: Path,
    six_task_dataset: Path,
    tiny_fit_args: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    root = tmp_path / "run"
    assert zoo(["fit", *tiny_fit_args(six_task_dataset, root)]) == 0
    (last,) = root.rglob("last.ckpt")
    resume = [f"--ckpt_path={last}"]
    other = tiny_fit_args(
        six_task_dataset, tmp_path / "other", "--model.lr=0.01", "--model.token_mask=0.1",
        *resume, max_steps=4, backbone="transformer",
    )  # fmt: skip
    assert zoo(["fit", *other]) == 2
    err = capsys.readouterr().err
    assert (
        "was trained with other settings (model.backbone, model.lr, model.token_mask differ)" in err
    )
    allowed = tiny_fit_args(
        six_task_dataset, tmp_path / "more", "--model.compile=false", *resume, max_steps=4
    )
    assert zoo(["fit", *allowed]) == 0  # more steps: what a resume is for
