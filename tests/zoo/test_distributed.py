"""`zoo fit` beyond one process: Lightning's DDP over 2 CPU processes (gloo), windows sharded per
rank, and a run killed mid-epoch that resumes to the very parameters of an uninterrupted one."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.history import HistoryDataModule
from datamodules.sampling import EpochSampler
from zoo.training import make_cli

ZOO = Path(sys.executable).with_name("zoo")


@pytest.fixture(scope="module")
def dataset(six_task_dataset: Path) -> Path:
    return six_task_dataset


def test_every_rank_draws_other_windows(dataset: Path) -> None:
    data = HistoryDataModule(path=str(dataset), context_len=20)
    data.setup()
    windows = len(data.train_windows)
    shards = [
        list(EpochSampler(data.train_windows, num_replicas=2, rank=rank, seed=0)) for rank in (0, 1)
    ]
    # disjoint but for the padding that evens the ranks out (torch's DistributedSampler)
    padding = len(shards[0]) + len(shards[1]) - windows
    assert padding == windows % 2 and len(set(shards[0]) & set(shards[1])) <= padding
    assert set(shards[0]) | set(shards[1]) == set(range(windows))
    one = EpochSampler(data.train_windows, seed=0)
    first = list(one)
    one.set_epoch(1)
    assert sorted(first) == list(range(windows)) and list(one) != first  # a new order per epoch


@pytest.mark.slow
def test_ddp_trains_on_two_cpu_processes(tiny_fit_args, dataset: Path, tmp_path: Path) -> None:
    """The `zoo` command line, as a user runs it: Lightning starts rank 1 by running it again."""
    args = [*tiny_fit_args(dataset, tmp_path, max_steps=4, every=2)]
    args += ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(ZOO), "fit", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4


@pytest.mark.slow
def test_ddp_saves_and_resumes_every_ranks_carried_state(
    tiny_fit_args, dataset: Path, tmp_path: Path
) -> None:
    """Each rank carries its own batch rows' states (other windows, other tasks) and draws its own
    masks: the checkpoint holds both per rank, and a resume on two ranks takes them up."""
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    carry = ["--data.carry_state=true", "--data.context_episodes=0.25", "--data.batch_size=1"]
    carry.append("--model.token_mask=0.3")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = [*tiny_fit_args(dataset, tmp_path / "first", max_steps=2, every=2), *ddp, *carry]
    result = subprocess.run(
        [str(ZOO), "fit", *first], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    ranks = checkpoint["carried_state"]
    assert len(ranks) == len(checkpoint["rng_states"]) == 2
    hidden = [rank["state"]["hidden"] for rank in ranks]  # the GRU's
    assert hidden[0].shape == hidden[1].shape and not torch.equal(hidden[0], hidden[1])
    resumed = [*tiny_fit_args(dataset, tmp_path / "resumed", max_steps=4, every=2), *ddp, *carry]
    result = subprocess.run(
        [str(ZOO), "fit", *resumed, f"--ckpt_path={path}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "starts afresh" not in result.stderr
    last = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and len(last["carried_state"]) == 2


class Killed(Exception):
    """Stands for the process dying after a checkpoint was written."""


def fit_in_process(
    args: list[str], *, kill_at: int | None = None, ckpt: Path | None = None
) -> dict[str, torch.Tensor]:
    import lightning.pytorch as pl

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            if trainer.global_step == kill_at:
                raise Killed

    cli = make_cli(args, run=False)
    if kill_at is not None:
        cli.trainer.callbacks.append(Kill())
    with contextlib.suppress(Killed):
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt)
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


@pytest.mark.parametrize(
    ("carry", "mask"),
    [(False, 0.0), (True, 0.0), (False, 0.3), (True, 0.3)],
    ids=["windows", "carried-state", "windows-masked", "carried-state-masked"],
)
def test_a_run_killed_mid_epoch_resumes_to_the_same_parameters(
    tiny_fit_args, dataset: Path, tmp_path: Path, carry: bool, mask: float
) -> None:
    """With `data.carry_state`, the checkpoint also holds every row's carried state; with
    `model.token_mask`, the random-number states (the masks a resumed run draws are the ones
    the uninterrupted run drew)."""
    extra = ["--data.carry_state=true", "--data.context_episodes=0.25"] if carry else []
    extra.append(f"--model.token_mask={mask}")
    straight = fit_in_process(
        tiny_fit_args(dataset, tmp_path / "straight", *extra, max_steps=9, every=3)
    )
    args = tiny_fit_args(dataset, tmp_path / "killed", *extra, max_steps=9, every=3)
    fit_in_process(args, kill_at=4)  # killed after the checkpoint of step 3
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 3
    assert json.dumps(state["loops"]["fit_loop"]["state_dict"]["combined_loader"])
    assert ("carried_state" in state) == carry
    assert len(state["rng_states"]) == 1  # one process: one rank's states
    resumed = fit_in_process(args, ckpt=checkpoint)
    for key, value in straight.items():
        np.testing.assert_array_equal(resumed[key].numpy(), value.numpy(), key)
