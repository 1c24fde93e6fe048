"""The report's statistics say what they are: rliable's IQM and its interval only from 5 runs
(mean and range below that), episodes to 80% of optimal as a censored count, and Kendall's tau
between the rankings at two training budgets of the same runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reporting.tables import (
    MIN_RUNS_FOR_IQM,
    budget_table,
    episodes_to_80,
    interval,
    ranking_steps,
    statistic_name,
)


def test_below_five_runs_the_mean_and_the_range() -> None:
    three = np.array([1.0, 4.0, 10.0])
    assert interval(three, reps=200) == pytest.approx((5.0, 1.0, 10.0))
    assert statistic_name(3) == "mean [range over 3]"
    one = interval(np.array([2.0]), reps=200)
    assert one[0] == 2.0 and np.isnan(one[1]) and np.isnan(one[2])
    curves = np.array([[0.0, 1.0], [2.0, 3.0]])  # [runs, K]: per episode
    mean, low, high = interval(curves, reps=200)
    np.testing.assert_allclose(mean, [1.0, 2.0])
    np.testing.assert_allclose(low, [0.0, 1.0])
    np.testing.assert_allclose(high, [2.0, 3.0])


def test_from_five_runs_the_iqm_and_a_bootstrap_interval() -> None:
    assert MIN_RUNS_FOR_IQM == 5 and statistic_name(5) == "IQM [95% CI]"
    scores = np.array([0.0, 1.0, 2.0, 3.0, 100.0, 4.0, 5.0, 6.0])
    point, low, high = interval(scores, reps=500)
    assert point < scores.mean()  # the outlier is trimmed
    assert scores.min() <= low < point < high <= scores.max()
    assert (low, high) != (scores.min(), scores.max())


def test_episodes_to_80_is_a_censored_count() -> None:
    k = 10
    runs = pd.DataFrame(
        {
            "episodes_to_80": [3, 5, k + 1, k + 1],  # K + 1: never within K episodes
            "curve": [[0.0] * k] * 4,
        }
    )
    assert episodes_to_80(runs) == {
        "episodes_to_80_reached": 2,
        "episodes_to_80_runs": 4,
        "episodes_to_80_median": 4.0,
    }
    never = episodes_to_80(runs.iloc[2:])
    assert never["episodes_to_80_reached"] == 0 and never["episodes_to_80_median"] is None


def _runs(means: dict[str, tuple[float, float]], seeds: int = 4) -> pd.DataFrame:
    rows = []
    for backbone, (early, late) in means.items():
        for seed in range(seeds):
            jitter = 0.01 * seed
            rows.append(
                {
                    "data_mode": "ad",
                    "backbone": backbone,
                    "context_episodes": 8.0,
                    "seed": seed,
                    "budgets": {
                        "1500": {"step": 1500, "val": 1.0, "return_final": early + jitter},
                        "6000": {"step": 5000, "val": 2.0, "return_final": late + jitter},
                    },
                }
            )
    return pd.DataFrame(rows)


def test_budget_rankings_and_kendalls_tau() -> None:
    reversed_ = _runs({"a": (3.0, 1.0), "b": (2.0, 2.0), "c": (1.0, 3.0)})
    ranking, taus = budget_table(reversed_, reps=200)
    early = ranking[ranking["budget"] == 1500].sort_values("rank")["backbone"].tolist()
    late = ranking[ranking["budget"] == 6000].sort_values("rank")["backbone"].tolist()
    assert early == ["a", "b", "c"] and late == ["c", "b", "a"]
    (tau,) = taus.to_dict("records")
    assert tau["budget"] == 1500 and tau["against"] == 6000 and tau["seeds"] == 4
    assert tau["kendall_tau"] == pytest.approx(-1.0)
    assert np.isnan(tau["ci_low"]) and np.isnan(tau["ci_high"])  # 4 seeds: no interval
    five = budget_table(
        _runs({"a": (3.0, 1.0), "b": (2.0, 2.0), "c": (1.0, 3.0)}, seeds=5), reps=200
    )[1]
    assert five["ci_low"].iloc[0] == pytest.approx(-1.0) == five["ci_high"].iloc[0]
    same = budget_table(_runs({"a": (3.0, 3.0), "b": (2.0, 2.0), "c": (1.0, 1.0)}), reps=200)[1]
    assert same["kendall_tau"].iloc[0] == pytest.approx(1.0)


def test_how_sure_each_step_of_a_ranking_is() -> None:
    """Neighbours in a budget's ranking: rliable's probability of improvement over seeds, with
    a bootstrap interval from 5 seeds each (none below); apart runs give 1, tied runs 0.5."""
    from rliable import library as rly
    from rliable import metrics

    runs = _runs({"a": (3.0, 1.0), "b": (2.9, 2.0), "c": (1.0, 2.0)}, seeds=5)
    ranking, _ = budget_table(runs, reps=50)
    steps = ranking_steps(ranking, runs, reps=500)
    early = steps[steps["budget"] == 1500].sort_values("rank")
    assert early[["above", "below"]].values.tolist() == [["a", "b"], ["b", "c"]]
    assert early["p_above"].tolist() == pytest.approx([1.0, 1.0])  # every run of a above b's
    assert early["ci_low"].tolist() == pytest.approx([1.0, 1.0])  # and every resample too
    late = steps[steps["budget"] == 6000].sort_values("rank")
    # b and c at the top: the same returns but for the jitter by seed, so half of the pairs
    assert sorted(late.iloc[0][["above", "below"]]) == ["b", "c"]
    assert late.iloc[0]["p_above"] == pytest.approx(0.5)
    assert late.iloc[0]["ci_low"] < 0.5 < late.iloc[0]["ci_high"]
    # the bootstrap drawn here is rliable's stratified one, every resample at once
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([1.5, 2.5, 2.0, 0.5, 6.0])
    mixed = pd.DataFrame(
        [
            {
                "data_mode": "ad",
                "backbone": backbone,
                "context_episodes": 8.0,
                "seed": seed,
                "budgets": {"6000": {"step": 6000, "val": 1.0, "return_final": float(score)}},
            }
            for backbone, scores in (("x", x), ("y", y))
            for seed, score in enumerate(scores)
        ]
    )
    (step,) = ranking_steps(budget_table(mixed, reps=50)[0], mixed, reps=4000).to_dict("records")
    assert (step["above"], step["below"]) == ("x", "y")
    assert step["p_above"] == pytest.approx(15.5 / 25)  # ties count half
    np.random.seed(0)
    _, ci = rly.get_interval_estimates(
        {"xy": [x[:, None], y[:, None]]},
        lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
        reps=4000,
    )
    assert step["ci_low"] == pytest.approx(ci["xy"][0][0], abs=0.05)
    assert step["ci_high"] == pytest.approx(ci["xy"][1][0], abs=0.05)
    # a facet that is NaN (an axis some runs lack) selects its own runs, not none
    facet = mixed.assign(**{"data.train_tasks": np.nan})
    (step,) = ranking_steps(budget_table(facet, reps=50)[0], facet, reps=200).to_dict("records")
    assert (step["seeds_above"], step["p_above"]) == (5, pytest.approx(15.5 / 25))
    # equal means: the ranking's order is arbitrary, and P says which way the runs lean
    outlier = mixed.copy()
    outlier["budgets"] = [
        {"6000": {"step": 6000, "val": 1.0, "return_final": s}}
        for s in [0.0, 0.0, 0.0, 0.0, 10.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    ]
    (step,) = ranking_steps(budget_table(outlier, reps=50)[0], outlier, reps=200).to_dict("records")
    assert step["equal_means"] and step["p_above"] == pytest.approx(0.2)
    four = _runs({"a": (3.0, 1.0), "b": (2.0, 2.0)}, seeds=4)  # below 5 seeds: no interval
    below_five = ranking_steps(budget_table(four, reps=50)[0], four, reps=200)
    assert len(below_five) == 2 and below_five["ci_low"].isna().all()


def test_a_score_above_random_play() -> None:
    """The bandit: random play earns the mean arm, so a fraction of optimal flatters; the share of
    the way from random to optimal (and to the source learner) does not."""
    import numpy as np

    from zoo.evaluation import summarise

    returns = np.array([[0.5, 0.7, 0.9], [0.3, 0.5, 0.7]])  # [task, episode]
    optimal, random = np.array([1.0, 0.8]), np.array([0.5, 0.4])
    plain = summarise(returns, optimal, final_episodes=1)
    scored = summarise(returns, optimal, final_episodes=1, random=random)
    assert "above_random" not in plain and plain["fraction_optimal"] == pytest.approx(0.8 / 0.9)
    assert scored["random"] == pytest.approx(0.45)
    assert scored["above_random"] == pytest.approx((0.8 - 0.45) / (0.9 - 0.45))
