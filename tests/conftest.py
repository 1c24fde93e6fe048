"""Suite-wide settings: one torch thread per test process and per process a test starts (a `zoo fit`,
a sweep's worker and its trials' children), unless the test asks for more; a tiny dataset every
package's tests share.

The suite runs as two xdist workers on two cores; tiny models made of many small ops slow down by
an order of magnitude when each worker's OpenMP threads compete for the same cores
(BENCHMARKS.md, "Process start-up", its last paragraph).
"""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by every process a test starts


@pytest.fixture(scope="session")
def six_task_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Dark Room dataset: 6 training goals, 4 episodes per history."""
    from cli import main as zoo

    path = tmp_path_factory.mktemp("six_tasks") / "darkroom"
    args = ["--env", "darkroom", "--num_tasks", "6", "--episodes", "4", "--no_progress"]
    assert zoo(["collect", *args, "--output", str(path)]) == 0
    return path
