"""bench/reference_score.py: the families' reference scores that BENCHMARKS.md quotes, on
evaluations written by hand (the shape `zoo evaluate` writes), so each formula is pinned."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reference_score", ROOT / "bench/reference_score.py")
assert spec is not None and spec.loader is not None
reference_score = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference_score)


def write(
    run: Path, kind: str, seed: int, returns, *, optimal=2.0, source=None, tasks=None, name="eval"
):
    out = run / kind / f"{name}-{seed}"
    out.mkdir(parents=True)
    result = {
        "seed": seed,
        "split": "test",
        "mode": "stream",
        "returns": np.asarray(returns, dtype=float).tolist(),
        "optimal": [optimal] * len(returns),
        "source": None if source is None else {"learner": "ucb", "returns": source},
        "tasks": tasks,
        "summary": {"auc": float(np.mean(returns))},
    }
    (out / "returns.json").write_text(json.dumps(result))


def test_final_return_as_a_fraction_of_optimal_and_the_mean_over_training_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two tasks x 6 episodes; the score averages the last 2 episodes of both tasks
    for run, last in (("a", 1.0), ("b", 2.0)):
        for seed in (0, 1):
            write(tmp_path / run, "ad", seed, [[0, 0, 0, 0, last, last], [0, 0, 0, 0, 0, last]])
    scores = reference_score.run_scores(tmp_path / "a", "key_to_door", "ad", 2, [0, 1])
    assert scores == [pytest.approx(0.75 / 2), pytest.approx(0.75 / 2)]
    capsys.readouterr()
    reference_score.main(
        [
            "key_to_door",
            "ad",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--final",
            "2",
            "--seeds",
            "0",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "over 2 training seeds x 2 evaluation seeds: mean 56.2% of optimal" in out
    assert "per training seed 37.5%, 75.0%" in out


def test_bandit_score_is_normalised_by_ucb_on_the_same_bandits(tmp_path: Path) -> None:
    arms = [[0.2, 0.6], [0.4, 0.8]]  # two bandits; a random arm earns 0.5 on average
    ucb = [[0.5, 0.7, 0.7], [0.5, 0.7, 0.7]]  # 0.7 over the last 2 pulls
    write(tmp_path, "ad", 0, [[0.4, 0.6, 0.6], [0.4, 0.6, 0.6]], source=ucb, tasks=arms)
    write(tmp_path, "ed", 0, [[0.4, 0.4, 0.4], [0.4, 0.4, 0.4]], tasks=arms)
    (ad,) = reference_score.run_scores(tmp_path, "bandit", "ad", 2, [0])
    (ed,) = reference_score.run_scores(tmp_path, "bandit", "ed", 2, [0])
    assert ad == pytest.approx((0.6 - 0.5) / (0.7 - 0.5))
    assert ed == pytest.approx((0.4 - 0.5) / (0.7 - 0.5))  # ED reads the AD run's UCB


def test_a_missing_evaluation_says_which_run_to_make(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"bench/reference\.sh darkroom_hard ad"):
        reference_score.main(["darkroom_hard", "ad", str(tmp_path)])


def test_dark_room_hard_counts_goals_found_and_goals_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # four tasks x 4 episodes: kept, found then lost, never found, found late and kept
    returns = [[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]
    write(tmp_path, "ad", 0, returns, optimal=1.0)
    scores = reference_score.run_scores(tmp_path, "darkroom_hard", "ad", 2, [0])
    assert scores == [pytest.approx(0.5)]
    out = capsys.readouterr().out
    assert "goal reached in some episode: 75% of tasks" in out
    assert "missed in most of the last 2 episodes: 25%" in out


def test_other_plays_of_the_checkpoints_are_scored_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--eval val80` scores `<run>/ad/val80-<seed>/` (e.g. validation plays), never eval-<seed>."""
    write(tmp_path, "ad", 0, [[0, 2.0]])
    write(tmp_path, "ad", 0, [[0, 1.0]], name="val80")
    reference_score.main(
        ["key_to_door", "ad", str(tmp_path), "--final", "1", "--seeds", "0", "--eval", "val80"]
    )
    assert "final score 50.0% of optimal" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"zoo evaluate <checkpoint> --seed 1"):
        reference_score.main(
            ["key_to_door", "ad", str(tmp_path), "--seeds", "1", "--eval", "val80"]
        )
