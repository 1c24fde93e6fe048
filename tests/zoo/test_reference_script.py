"""bench/reference.sh's stages: `STAGE=fit` screens a variant on validation tasks only, and
`STAGE=evaluate` plays the held-out tasks with a run that was fitted before, or says why it cannot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def reference(tmp_path: Path, stage: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STAGE": stage, "OUT": str(tmp_path / "out")}
    return subprocess.run(
        ["bash", str(ROOT / "bench/reference.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unknown_stage_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = reference(tmp_path, "test", "darkroom", "ad")
    assert done.returncode == 2
    assert "unknown STAGE test: fit, evaluate or all" in done.stderr
    assert not (tmp_path / "out").exists()


def test_evaluate_without_a_fitted_run_says_to_fit_first(tmp_path: Path) -> None:
    (tmp_path / "out" / "ad" / "checkpoints").mkdir(parents=True)
    kept = tmp_path / "out" / "ad" / "checkpoints" / "last.ckpt"
    kept.write_text("a run's file")
    done = reference(tmp_path, "evaluate", "darkroom", "ad")
    assert done.returncode == 1
    assert "no selected checkpoint in" in done.stderr and "STAGE=fit" in done.stderr
    assert kept.read_text() == "a run's file"  # the evaluate stage deletes nothing
