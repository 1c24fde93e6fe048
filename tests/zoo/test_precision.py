"""Every member trains under `--trainer.precision bf16-mixed` (CPU autocast here, as it would on a
GPU): two `zoo fit` steps and a validation, finite and moving weights. The CPU stand-in for the 16-bit
paths a GPU run takes (bench/gpu_check.sh runs the same on CUDA)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from backbones import BACKBONES
from zoo.training import make_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(six_task_dataset: Path) -> Path:
    return six_task_dataset


@functools.cache
def cpu_has_bf16_lstm() -> bool:
    """Whether oneDNN runs `nn.LSTM` under CPU bf16 autocast here: it has no such kernel on a CPU
    without AVX-512 (an AVX2-only machine raises "could not create a primitive descriptor"); cuDNN
    on a GPU has one."""
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.randn(1, 2, 4))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_member_trains_two_steps_in_bf16_mixed(
    name: str, tiny_fit_args, dataset: Path, tmp_path: Path
) -> None:
    if name == "lstm" and not cpu_has_bf16_lstm():
        pytest.skip("oneDNN has no bf16 LSTM on this CPU (no AVX-512); bench/gpu_check.sh runs it")
    args = tiny_fit_args(
        dataset, tmp_path, "--trainer.precision=bf16-mixed", max_steps=2, every=2, backbone=name
    )
    cli = make_cli(args, run=False)
    before = {k: v.clone() for k, v in cli.model.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
    assert cli.trainer.precision == "bf16-mixed"
    after = cli.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    moved = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in moved), f"{name}: no backbone weight moved"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
