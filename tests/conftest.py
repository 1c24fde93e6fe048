"""Suite-wide settings: one torch thread per test process; a tiny dataset every package's tests share.

The suite runs as two xdist workers on two cores; tiny models made of many small ops slow down by
an order of magnitude when each worker's OpenMP threads compete for the same cores.
"""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def six_task_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Dark Room dataset: 6 training goals, 4 episodes per history."""
    from cli import main as zoo

    path = tmp_path_factory.mktemp("six_tasks") / "darkroom"
    args = ["--env", "darkroom", "--num_tasks", "6", "--episodes", "4", "--no_progress"]
    assert zoo(["collect", *args, "--output", str(path)]) == 0
    return path
