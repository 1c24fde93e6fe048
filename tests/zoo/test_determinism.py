"""The same `zoo fit` command, run twice as separate processes (as sweep trials run, side by side),
writes the same weights, and `zoo evaluate` of the two checkpoints gives the same returns, for every
registered member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones import BACKBONES
from backbones.presets import preset_path
from cli import main as zoo

ZOO = Path(sys.executable).with_name("zoo")


@pytest.fixture(scope="module")
def dataset(six_task_dataset: Path) -> Path:
    return six_task_dataset


def fit_twice(args: list[str], roots: tuple[Path, Path]) -> list[Path]:
    """The same `zoo fit` command in two processes side by side; their last checkpoints."""
    # two threads each: intra-op parallelism is where a run-to-run difference would come from
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    runs = [
        subprocess.Popen(
            [str(ZOO), "fit", *args, f"--trainer.default_root_dir={root}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for root in roots
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-2000:]
    return [next(root.glob("**/last.ckpt")) for root in roots]


def returns_of(checkpoint: Path, out: Path) -> list:
    args = [str(checkpoint), "--episodes=3", "--source_episodes=0", f"--out={out}"]
    assert zoo(["evaluate", *args]) == 0
    return json.loads((out / "returns.json").read_text())["returns"]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_two_processes_train_the_same_weights(
    backbone: str, tiny_fit_args, dataset: Path, tmp_path: Path
) -> None:
    args = [
        a
        for a in tiny_fit_args(dataset, tmp_path)
        if not a.startswith(("--trainer.default_root_dir", "--model.backbone"))
    ]
    args.append(f"--model.backbone={preset_path(backbone, 'tiny')}")
    first, second = fit_twice(args, (tmp_path / "a", tmp_path / "b"))
    weights = [torch.load(c, weights_only=True)["state_dict"] for c in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"{backbone}: {name} differs"
    assert returns_of(first, tmp_path / "eval-a") == returns_of(second, tmp_path / "eval-b")
