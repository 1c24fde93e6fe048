"""`scripts/setup.sh`: its set-up stamp (computed, nothing installed) changes with ZOO_GPU, so a GPU
set-up after a CPU one installs again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def stamp(venv: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "ZOO_GPU"}
    done = subprocess.run(
        [str(SETUP), "--print-stamp"],
        env={**environment, "VENV": str(venv), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_the_setup_stamp_changes_with_zoo_gpu(tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # not created: the stamp is only computed
    cpu, gpu = stamp(venv), stamp(venv, ZOO_GPU="1")
    assert cpu == stamp(venv, ZOO_GPU="0")  # unset is the CPU set-up
    assert cpu != gpu
    assert {Path(cpu).parent, Path(gpu).parent} == {venv}
    assert Path(cpu).name.startswith(".zoo-setup-") and Path(gpu).name.startswith(".zoo-setup-")
    assert not venv.exists()  # nothing was installed
