"""The same `zoo fit` command, run twice as separate processes (as sweep trials run), writes the same
weights, and `zoo evaluate` of those weights gives the same returns, for every registered member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones import BACKBONES
from zoo.cli import main as zoo

ZOO = Path(sys.executable).with_name("zoo")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("determinism") / "darkroom"
    args = ["--env", "darkroom", "--num_tasks", "6", "--episodes", "4", "--no_progress"]
    assert zoo(["collect", *args, "--output", str(path)]) == 0
    return path


def fit_and_evaluate(args: list[str], root: Path) -> tuple[dict[str, torch.Tensor], list]:
    # two threads: intra-op parallelism is where a run-to-run difference would come from
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [str(ZOO), "fit", *args, f"--trainer.default_root_dir={root}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (checkpoint,) = root.glob("**/last.ckpt")
    out = root / "eval"
    evaluate = [str(ZOO), "evaluate", str(checkpoint), "--episodes=3", "--source_episodes=0"]
    done = subprocess.run([*evaluate, f"--out={out}"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return state, json.loads((out / "returns.json").read_text())["returns"]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_two_processes_train_the_same_weights(
    backbone: str, tiny_fit_args, dataset: Path, tmp_path: Path
) -> None:
    args = tiny_fit_args(dataset, tmp_path, max_steps=3, every=3)
    args = [a for a in args if not a.startswith(("--trainer.default_root_dir", "--model.backbone"))]
    from backbones.presets import preset_path

    args.append(f"--model.backbone={preset_path(backbone, 'tiny')}")
    first, first_returns = fit_and_evaluate(args, tmp_path / "a")
    second, second_returns = fit_and_evaluate(args, tmp_path / "b")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{backbone}: {name} differs between runs"
    assert first_returns == second_returns
