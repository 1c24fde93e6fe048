"""The whole pipeline through the `zoo` command, tiny: collect, fit (LightningCLI), evaluate, for
every registered backbone; resume; a config typo and an env mismatch give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from backbones import BACKBONES
from backbones.presets import preset_path
from cli import main as zoo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("collect") / "darkroom"
    args = ["--env", "darkroom", "--num_tasks", "6", "--episodes", "4", "--output", str(path)]
    assert zoo(["collect", *args]) == 0
    return path


def fit_args(dataset: Path, root: Path, backbone: str, *, max_steps: int = 3) -> list[str]:
    return [
        f"--data.path={dataset}",
        "--data.context_episodes=1",  # 20 steps, converted with Dark Room's episode length
        "--data.batch_size=4",
        "--data.val_windows=8",
        f"--model.backbone={preset_path(backbone, 'tiny')}",
        "--model.warmup_steps=1",
        f"--trainer.max_steps={max_steps}",
        "--trainer.val_check_interval=3",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.callbacks+=zoo.evaluation.InContextEvaluation",
        "--trainer.callbacks.episodes=2",
    ]


def last_checkpoint(root: Path) -> Path:
    (path,) = root.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    return path


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_collect_fit_evaluate(backbone: str, dataset: Path, tmp_path: Path) -> None:
    assert zoo(["fit", *fit_args(dataset, tmp_path, backbone)]) == 0
    (metrics_file,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    metrics = pd.read_csv(metrics_file)
    for key in ("train/loss", "val/loss", "val/action_acc", "val/return_final", "val/auc"):
        assert metrics[key].notna().any(), key

    out = tmp_path / "eval"
    args = [str(last_checkpoint(tmp_path)), "--episodes=2", "--tasks=3", "--mode=window"]
    assert zoo(["evaluate", *args, f"--out={out}"]) == 0
    result = json.loads((out / "returns.json").read_text())
    assert len(result["returns"]) == 3 and len(result["returns"][0]) == 2
    assert result["env"]["name"] == "darkroom" and result["mode"] == "window"
    assert len(result["source"]["returns"][0]) == 2  # 2 episodes x keep_every 1
    assert 0 <= result["summary"]["return_final"] <= result["summary"]["optimal"]
    table = pd.read_csv(out / "returns.csv")
    assert set(table["curve"]) == {"in_context", "source"} and len(table) == 2 * 3 * 2
    assert (out / "curve.png").stat().st_size > 0


def test_fit_resumes_from_a_checkpoint(dataset: Path, tmp_path: Path) -> None:
    assert zoo(["fit", *fit_args(dataset, tmp_path / "first", "gru")]) == 0
    checkpoint = last_checkpoint(tmp_path / "first")
    resumed = tmp_path / "resumed"
    args = [*fit_args(dataset, resumed, "gru", max_steps=6), f"--ckpt_path={checkpoint}"]
    assert zoo(["fit", *args]) == 0
    (metrics_file,) = resumed.glob("lightning_logs/version_*/metrics.csv")
    metrics = pd.read_csv(metrics_file)
    trained = metrics.dropna(subset=["train/loss"])["step"]
    assert sorted(trained) == [3, 4, 5]  # it went on from step 3, not from the start
    assert torch.load(last_checkpoint(resumed), weights_only=True)["global_step"] == 6


def test_a_config_typo_is_refused_clearly(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert zoo(["fit", *fit_args(dataset, tmp_path, "gru"), "--model.lrr=0.1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "zoo fit: error: unrecognized arguments: --model.lrr=0.1",
        "see `zoo fit --help` for the options",
    ]


def test_evaluating_on_another_env_is_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert zoo(["fit", *fit_args(dataset, tmp_path, "gru")]) == 0
    args = [str(last_checkpoint(tmp_path)), "--env=key_to_door", f"--out={tmp_path / 'eval'}"]
    assert zoo(["evaluate", *args]) == 2
    assert "trained on env 'darkroom', not 'key_to_door'" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_a_missing_dataset_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = fit_args(tmp_path / "nowhere", tmp_path, "gru")
    assert zoo(["fit", *args]) == 2
    assert "no dataset directory here; create it with `zoo collect" in capsys.readouterr().err
