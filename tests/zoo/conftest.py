"""Shared pieces of the `zoo` command tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from backbones.presets import preset_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared machine: one thread is ~10x faster than oversubscribed cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_fit_args(
    dataset: Path,
    root: Path,
    *extra: str,
    max_steps: int = 2,
    every: int = 2,
    backbone: str = "gru",
) -> list[str]:
    """`zoo fit` options for a few steps of a tiny preset (the GRU by default), no logger,
    checkpoints under `root`; `extra` last, so it overrides any of them."""
    return [
        f"--data.path={dataset}",
        "--data.context_episodes=1",
        "--data.batch_size=4",
        "--data.val_windows=8",
        f"--model.backbone={preset_path(backbone, 'tiny')}",
        "--model.warmup_steps=1",
        f"--trainer.max_steps={max_steps}",
        f"--trainer.val_check_interval={every}",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_fit_args() -> Callable[..., list[str]]:
    return _tiny_fit_args
