"""bench/val_score.py: the validation score a run selected its checkpoint by, read from the
`ModelCheckpoint` state that Lightning saves in `last.ckpt`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("val_score", ROOT / "bench/val_score.py")
assert spec is not None and spec.loader is not None
val_score = importlib.util.module_from_spec(spec)
spec.loader.exec_module(val_score)

HPARAMS = {"num_observations": 81, "num_actions": 5, "context_len": 160}


def write_run(run: Path, callbacks: dict) -> None:
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = {
        "state_dict": {},
        "hyper_parameters": HPARAMS,
        "global_step": 1500,
        "callbacks": callbacks,
    }
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")


def state(monitor: str, score: float, path: str) -> tuple[str, dict]:
    key = "ModelCheckpoint" + repr({"monitor": monitor, "mode": "max"})
    return key, {"best_model_score": torch.tensor(score), "best_model_path": path}


def test_reads_the_monitored_best_score_and_its_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(
        tmp_path,
        dict(
            [
                state("val_loss", 0.5, "/x/best-step1500-val_loss0.5.ckpt"),
                state("val/return_final", 9.77, "/x/selected-step1250.ckpt"),
            ]
        ),
    )
    assert val_score.selection(tmp_path, "val/return_final") == {
        "score": pytest.approx(9.77),
        "selected": 1250,
        "steps": 1500,
    }
    val_score.main([str(tmp_path)])
    assert "best val/return_final 9.770 at step 1250 of 1500" in capsys.readouterr().out


def test_a_run_without_that_monitor_is_one_line(tmp_path: Path) -> None:
    write_run(tmp_path, dict([state("val_loss", 0.5, "/x/best.ckpt")]))
    with pytest.raises(SystemExit, match="no ModelCheckpoint monitoring 'val/return_final'"):
        val_score.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="no checkpoint file here"):
        val_score.main([str(tmp_path / "missing")])
