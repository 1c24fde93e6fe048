"""Every task family's committed configs run through the `zoo` command, tiny: collect (its collect
config), fit AD and ED (its experiment, the ED switch the reference run uses), evaluate the
selected checkpoint on its held-out split (bandit: `ood`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backbones.presets import preset_path
from zoo.cli import main as zoo

ROOT = Path(__file__).resolve().parents[2]

GRID = (["--episodes=6", "--keep_every=2"], ["--data.context_episodes=1"], 2, "test")
# family: (collect overrides that keep it tiny, context, ED's expert episodes, held-out split)
FAMILIES = {
    "darkroom": GRID,
    "key_to_door": GRID,
    "darkroom_hard": GRID,
    "bandit": (["--episodes=12"], ["--data.context_episodes=6"], 6, "ood"),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_collect_fit_ad_and_ed_evaluate(family: str, tmp_path: Path) -> None:
    collect, context, expert_episodes, split = FAMILIES[family]
    data = tmp_path / "data"
    config = ROOT / "configs/collect" / f"{family}.yaml"
    tiny = ["--num_tasks=6", "--histories_per_task=1", "--num_shards=1", "--no_progress"]
    assert zoo(["collect", f"--config={config}", *tiny, *collect, f"--output={data}"]) == 0

    for mode in ("ad", "ed"):
        root = tmp_path / mode
        fit = [
            f"--config={ROOT / 'configs/experiments' / f'{family}.yaml'}",
            f"--data.path={data}",
            *context,
            f"--data.mode={mode}",
            *([f"--data.expert_episodes={expert_episodes}"] if mode == "ed" else []),
            "--data.batch_size=4",
            "--data.val_windows=8",
            f"--model.backbone={preset_path('transformer', 'tiny')}",
            "--model.compile=false",
            "--model.warmup_steps=1",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={root}",
        ]
        assert zoo(["fit", *fit]) == 0, mode
        (selected,) = root.glob("checkpoints/selected-step*.ckpt")  # chosen on validation tasks
        out = root / "eval"
        args = [str(selected), f"--split={split}", "--tasks=3", "--episodes=2", f"--out={out}"]
        assert zoo(["evaluate", *args]) == 0, mode
        result = json.loads((out / "returns.json").read_text())
        assert result["env"]["name"] == family and result["split"] == split
        assert len(result["returns"]) == 3 and len(result["returns"][0]) == 2
        # beside it, the learner that made the histories (ED here trains on their last episodes)
        assert result["source"] is not None and len(result["source"]["returns"]) == 3


def test_a_model_of_an_expert_dataset_is_shown_without_a_source_learner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An expert dataset's episodes come from no learner (its manifest still names one, unused):
    its ED model's evaluation shows no "source learner", and asking for one is a clear refusal."""
    data = tmp_path / "expert"
    config = ROOT / "configs/collect/darkroom_expert.yaml"
    tiny = ["--num_tasks=6", "--histories_per_task=1", "--num_shards=1", "--episodes=3"]
    assert zoo(["collect", f"--config={config}", *tiny, "--no_progress", f"--output={data}"]) == 0
    root = tmp_path / "ed"
    fit = [
        f"--config={ROOT / 'configs/experiments/darkroom.yaml'}",
        f"--data.path={data}",
        "--data.mode=ed",
        "--data.context_episodes=1",
        "--data.batch_size=4",
        "--data.val_windows=8",
        f"--model.backbone={preset_path('transformer', 'tiny')}",
        "--model.compile=false",
        "--trainer.max_steps=1",
        "--trainer.val_check_interval=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
    ]
    assert zoo(["fit", *fit]) == 0
    (selected,) = root.glob("checkpoints/selected-step*.ckpt")
    args = [str(selected), "--tasks=2", "--episodes=2"]
    assert zoo(["evaluate", *args, f"--out={root / 'eval'}"]) == 0
    assert json.loads((root / "eval/returns.json").read_text())["source"] is None
    capsys.readouterr()
    assert zoo(["evaluate", *args, "--source_episodes=4", f"--out={root / 'again'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[0]
    assert "trained on expert episodes" in err and "leave out --source_episodes" in err, err
    assert not (root / "again").exists()
