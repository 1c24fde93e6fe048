"""Every task family's committed configs run through the `zoo` command, tiny: collect (its collect
config), fit AD and ED (its experiment, the ED switch the reference run uses), evaluate the
selected checkpoint on its held-out split (bandit: `ood`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli import main as zoo

ROOT = Path(__file__).resolve().parents[2]

# (AD and expert collect overrides that keep it tiny, the context, the held-out split); a grid's
# expert episodes end early, so 10 of them fill one episode's context
GRID = (
    ["--episodes=6", "--keep_every=2"],
    ["--episodes=10"],
    ["--data.context_episodes=1"],
    "test",
)
FAMILIES = {
    "darkroom": GRID,
    "key_to_door": GRID,
    "darkroom_hard": GRID,
    "bandit": (["--episodes=12"], ["--episodes=12"], ["--data.context_episodes=6"], "ood"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def collect(config: str, output: Path, *extra: str) -> Path:
    """`zoo collect` of a committed collect config, six tasks, one shard."""
    path = ROOT / "configs/collect" / f"{config}.yaml"
    tiny = ["--num_tasks=6", "--histories_per_task=1", "--num_shards=1", "--no_progress"]
    assert zoo(["collect", f"--config={path}", *tiny, *extra, f"--output={output}"]) == 0
    return output


def fit(tiny_fit_args, family: str, data: Path, root: Path, *extra: str, steps: int = 2) -> Path:
    """`zoo fit` of the family's committed experiment on `data` with the tiny transformer for a
    few steps (conftest's tiny options); returns the checkpoint it selected on the validation
    tasks."""
    config = f"--config={ROOT / 'configs/experiments' / f'{family}.yaml'}"
    tiny = tiny_fit_args(
        data,
        root,
        "--model.compile=false",
        *extra,
        max_steps=steps,
        every=steps,
        backbone="transformer",
    )
    assert zoo(["fit", config, *tiny]) == 0
    (selected,) = root.glob("checkpoints/selected-step*.ckpt")
    return selected


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_collect_fit_ad_and_ed_evaluate(
    tiny_fit_args, family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As bench/reference.sh runs it: AD on the learning histories, ED on the family's expert
    dataset (configs/collect/<family>_expert.yaml, the optimal policy on the same tasks)."""
    ad_collect, ed_collect, context, split = FAMILIES[family]
    for mode, config, extra in (
        ("ad", family, ad_collect),
        ("ed", f"{family}_expert", ed_collect),
    ):
        data = collect(config, tmp_path / config, *extra)
        root = tmp_path / mode
        selected = fit(tiny_fit_args, family, data, root, *context, f"--data.mode={mode}")
        out = root / "eval"
        args = [str(selected), f"--split={split}", "--tasks=3", "--episodes=2"]
        assert zoo(["evaluate", *args, f"--out={out}"]) == 0, mode
        result = json.loads((out / "returns.json").read_text())
        assert result["env"]["name"] == family and result["split"] == split
        assert len(result["returns"]) == 3 and len(result["returns"][0]) == 2
        # random play's expected return where it is known: the bandit's mean arm
        if family == "bandit":
            np.testing.assert_allclose(result["random"], np.mean(result["tasks"], axis=1))
            assert "above_random" in result["summary"]
        else:
            assert result["random"] is None and "above_random" not in result["summary"]
        if mode == "ad":  # beside it, the learner that made its data, on the same tasks
            assert len(result["source"]["returns"]) == 3
        else:  # an expert dataset's episodes come from no learner (its manifest names one, unused)
            assert result["source"] is None
            capsys.readouterr()
            assert zoo(["evaluate", *args, "--source_episodes=4", f"--out={root / 'again'}"]) == 2
            err = capsys.readouterr().err.strip().splitlines()[0]
            assert "trained on expert episodes" in err and "leave out --source_episodes" in err
            assert not (root / "again").exists()


def test_the_source_baseline_is_not_correlated_with_the_bandits_payouts(
    tiny_fit_args, tmp_path: Path
) -> None:
    """UCB1's first pull is a random arm (every arm is untried): on many train bandits it scores
    about a random arm's share of the best (~40-45%). The learner and the envs drawing from one seed
    made it 81%."""
    data = collect("bandit", tmp_path / "bandit", "--episodes=12")
    checkpoint = fit(tiny_fit_args, "bandit", data, tmp_path, "--data.context_episodes=6", steps=1)
    args = [str(checkpoint), "--split=train", "--tasks=2000", "--episodes=1", "--final_episodes=1"]
    assert zoo(["evaluate", *args, "--source_episodes=1", f"--out={tmp_path / 'eval'}"]) == 0
    result = json.loads((tmp_path / "eval/returns.json").read_text())
    first_pull = result["source"]["summary"]["return_first"] / result["summary"]["optimal"]
    assert 0.35 < first_pull < 0.55, first_pull
