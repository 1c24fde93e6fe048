"""The report's tables: one row per configuration (IQM and interval over seeds), the in-context
curves, the ranking at each training budget and how sure each of its steps is, each run's
validation peak against its final value, each tuning study's trials and choice, one row per
trial. An interval is a 95% stratified-bootstrap interval of rliable's IQM over seeds (runs)
only from `MIN_RUNS_FOR_IQM` runs: below that IQM trims nothing and its interval is the range,
so a configuration with fewer runs gets its mean and the range (min, max) over its n runs, and
says so.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pandas as pd

MIN_RUNS_FOR_IQM = 5
"""Runs below which rliable's IQM and bootstrap interval are not given (mean and range instead)."""


# -------------------------------------------------------------------------------- statistics
def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that count: complete, not grid duplicates, with a final return and a curve."""
    keep = (runs["state"] == "COMPLETE") & runs["return_final"].notna() & runs["curve"].notna()
    return runs[keep & (runs["kind"] != "tune")].copy()


def statistic_name(runs: int) -> str:
    """What `interval` gives for this many runs, as the report says it."""
    if runs >= MIN_RUNS_FOR_IQM:
        return "IQM [95% CI]"
    return "mean (1 run)" if runs == 1 else f"mean [range over {runs}]"


def interval(scores: np.ndarray, *, reps: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """(point, low, high) over runs (axis 0): from `MIN_RUNS_FOR_IQM` runs, rliable's IQM with
    its 95% stratified-bootstrap interval (for `[runs, K]` curves: the mean per column and its
    interval); with fewer, the mean and the range (min, max); no range for one run."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(scores, dtype=float)
    if len(scores) < MIN_RUNS_FOR_IQM:
        point = np.atleast_1d(scores.mean(axis=0))
        if len(scores) < 2:
            nan = np.full_like(point, np.nan)
            return _squeeze(point), _squeeze(nan), _squeeze(nan)
        low, high = np.atleast_1d(scores.min(axis=0)), np.atleast_1d(scores.max(axis=0))
        return _squeeze(point), _squeeze(low), _squeeze(high)
    if scores.ndim == 1:
        data, statistic = scores[:, None], lambda s: np.array([metrics.aggregate_iqm(s)])
    else:  # [runs, 1 task, K]: the mean over runs of every episode, in one call per resample
        data, statistic = scores[:, None, :], lambda s: s.mean(axis=(0, 1))
    point = statistic(data)
    if len(scores) < 2:
        nan = np.full_like(point, np.nan)
        return _squeeze(point), _squeeze(nan), _squeeze(nan)
    # rliable's StratifiedBootstrap draws its resamples from NumPy's global generator
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        _, ci = rly.get_interval_estimates({"x": data}, statistic, reps=reps)
    finally:
        np.random.set_state(state)
    return _squeeze(point), _squeeze(ci["x"][0]), _squeeze(ci["x"][1])


def _squeeze(a: np.ndarray) -> Any:
    return float(a[0]) if a.size == 1 else a


def label(mode: str, backbone: str) -> str:
    return backbone if mode == "ad" else f"{backbone} ({mode.upper()})"


AXES = ["data_mode", "backbone", "context_episodes"]
"""What every report groups its runs by; a study's further axes (`extra_axes`) come after."""


def extra_axes(runs: pd.DataFrame) -> list[str]:
    """The runs' axes beyond data, backbone and context (columns named by a `zoo fit` config
    path, e.g. `data.train_tasks`), which the tables facet by too."""
    return sorted(c for c in runs.columns if "." in str(c) and runs[c].notna().any())


def summary_table(runs: pd.DataFrame, *, reps: int) -> pd.DataFrame:
    """Backbone x context length (x any further axis): IQM final return [95% CI], seeds,
    fraction of optimal, cost."""
    rows = []
    extras = extra_axes(runs)
    for values, group in runs.groupby([*AXES, *extras], dropna=False, sort=True):
        mode, backbone, context = values[:3]
        iqm, low, high = interval(group["return_final"].to_numpy(float), reps=reps)
        row = {"label": label(mode, backbone), "data_mode": mode, "backbone": backbone}
        row.update(context_episodes=context, **dict(zip(extras, values[3:], strict=True)))
        row.update(seeds=len(group), iqm_return_final=iqm)
        row["statistic"] = statistic_name(len(group))
        row.update(ci_low=low, ci_high=high, mean_return_final=group["return_final"].mean())
        fraction = pd.to_numeric(group["fraction_optimal"], errors="coerce").dropna()
        if len(fraction):
            point, f_low, f_high = interval(fraction.to_numpy(float), reps=reps)
            row.update(iqm_fraction_optimal=point, fraction_ci_low=f_low, fraction_ci_high=f_high)
        # where random play's return is known (the bandit, about 45% of optimal), the share of
        # the way from random to optimal, and from random to the source learner
        above = pd.to_numeric(group.get("above_random", pd.Series(dtype=float)), errors="coerce")
        if above.notna().any():
            source = pd.to_numeric(group.get("source_above_random"), errors="coerce")
            row["above_random"] = above.mean()
            row["of_source_above_random"] = (above / source).mean() if mode == "ad" else None
        # the lockbox, beside the test split: the same checkpoints (each run's at its cap)
        lockbox = pd.to_numeric(
            group.get("lockbox_fraction_optimal", pd.Series(dtype=float)), errors="coerce"
        ).dropna()
        if len(lockbox):
            point, l_low, l_high = interval(lockbox.to_numpy(float), reps=reps)
            row.update(iqm_lockbox_fraction=point, lockbox_ci_low=l_low, lockbox_ci_high=l_high)
        # under-training made visible: how long the selected checkpoints trained, how many runs
        # ended at their step budget rather than by early stopping
        capped = group["budget_capped"].dropna()
        row["budget_capped"] = (
            f"{int(capped.astype(bool).sum())}/{len(capped)}" if len(capped) else None
        )
        row["tuned"] = (
            None
            if group["tuned_from"].isna().all() and group["kind"].eq("results").all()
            else "tuned"
            if group["tuned_from"].notna().all()
            else "untuned"
        )
        tasks, seeds = group["test_tasks"].dropna(), group["eval_seeds"].dropna()
        if len(tasks) and len(seeds):
            split = group["test_split"].dropna()  # older trials played `test` and did not say
            held_out = f"{split.iloc[0]} " if len(split) else ""
            row["evaluation"] = (
                f"{int(tasks.iloc[0])} {held_out}tasks x {len(seeds.iloc[0])} eval seeds"
            )
        if mode != "ad":  # ED trains on an expert's episodes: there is no source learner to show
            group = group.assign(source_return_final=np.nan)
        row.update(episodes_to_80(group))
        for column in (
            "fraction_optimal",
            "nauc",
            "selected_step",
            "steps_trained",
            "max_steps",
            "source_return_final",
            "parameters",
            "train_tokens_per_s",
            "eval_steps_per_s",
            "peak_rss_mb",
        ):
            values = pd.to_numeric(group[column], errors="coerce")
            row[column] = values.mean() if values.notna().any() else None
        rows.append(row)
    return pd.DataFrame(rows)


def episodes_to_80(group: pd.DataFrame) -> dict[str, Any]:
    """The censored "episodes to 80% of optimal": how many runs reached it within their K
    episodes (`episodes_to_80` <= K; K + 1 means never), and the median among those that did.
    A never-reached run is not a number of episodes, so it is counted, not averaged."""
    values = pd.to_numeric(group["episodes_to_80"], errors="coerce")
    lengths = group["curve"].map(lambda c: len(c) if isinstance(c, list | np.ndarray) else np.nan)
    known = values.notna() & lengths.notna()
    reached = values[known][values[known] <= lengths[known]]
    return {
        "episodes_to_80_reached": len(reached),
        "episodes_to_80_runs": int(known.sum()),
        "episodes_to_80_median": float(reached.median()) if len(reached) else None,
    }


def curve_table(runs: pd.DataFrame, *, reps: int) -> pd.DataFrame:
    """Long table of the in-context curves: mean return per episode and its 95% interval, per
    data mode, backbone and context; the source learner's curve as its own rows."""
    frames = []
    extras = extra_axes(runs)
    for values, group in runs.groupby([*AXES, *extras], dropna=False, sort=True):
        mode, backbone, context = values[:3]
        rows = _curve_rows(group["curve"], label(mode, backbone), mode, backbone, context, reps)
        frames.append(rows.assign(**dict(zip(extras, values[3:], strict=True))))
    # the source learner once per distinct play (its evaluation seeds), not once per trial: every
    # trial with the same evaluation seeds ran it on the same tasks with the same seeds
    sources = runs[runs["source_curve"].notna()]
    sources = sources.loc[sources["eval_seeds"].map(_as_key).drop_duplicates().index]
    for learner, group in sources.groupby("source_learner", dropna=False):
        frames.append(
            _curve_rows(
                group["source_curve"], f"source: {learner}", "source", learner, np.nan, reps
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _curve_rows(curves: pd.Series, name: str, mode: str, backbone: Any, context: Any, reps: int):
    length = min(len(c) for c in curves)  # runs evaluated for different K: the common prefix
    stacked = np.stack([np.asarray(c[:length], dtype=float) for c in curves])
    mean, low, high = (np.atleast_1d(a) for a in interval(stacked, reps=reps))
    return pd.DataFrame(
        {
            "label": name,
            "data_mode": mode,
            "backbone": backbone,
            "context_episodes": context,
            "episode": np.arange(1, length + 1),
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "runs": len(stacked),
        }
    )


def validation_table(runs: pd.DataFrame, *, reps: int) -> pd.DataFrame:
    """Long table of the validation return against training steps (the value every checkpoint
    choice is made on): per data mode, backbone and context, its mean over training seeds and
    band at each validation step all its runs reached (the same statistic as the curves)."""
    frames = []
    extras = extra_axes(runs)
    have = runs[runs["validation_curve"].map(lambda c: isinstance(c, list) and len(c) > 0)]
    for values, group in have.groupby([*AXES, *extras], dropna=False, sort=True):
        mode, backbone, context = values[:3]
        curves = [{int(step): float(value) for step, value in c} for c in group["validation_curve"]]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        stacked = np.array([[c[step] for step in steps] for c in curves])
        mean, low, high = (np.atleast_1d(a) for a in interval(stacked, reps=reps))
        frames.append(
            pd.DataFrame(
                {
                    "label": label(mode, backbone),
                    "data_mode": mode,
                    "backbone": backbone,
                    "context_episodes": context,
                    **dict(zip(extras, values[3:], strict=True)),
                    "step": steps,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "runs": len(stacked),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _as_key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple | np.ndarray) else value


# ------------------------------------------------------------------ budgets: the same runs, earlier
def budget_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table, one row per run and training budget: the step its checkpoint within that
    budget was chosen at, its validation value and its test return (runs with `budgets`)."""
    rows = []
    extras = extra_axes(runs)
    for _, run in runs.iterrows():
        budgets = run.get("budgets")
        if not isinstance(budgets, dict):
            continue
        for budget, chosen in budgets.items():
            if chosen.get("return_final") is None:
                continue
            rows.append(
                {
                    **{axis: run[axis] for axis in extras},
                    "data_mode": run["data_mode"],
                    "backbone": run["backbone"],
                    "context_episodes": run["context_episodes"],
                    "seed": run["seed"],
                    "budget": int(budget),
                    "selected_step": chosen.get("step"),
                    "val_return_final": chosen.get("val"),
                    "return_final": chosen["return_final"],
                    "optimal": run.get("optimal"),
                }
            )
    return pd.DataFrame(rows)


def budget_table(
    runs: pd.DataFrame, *, reps: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranking of the backbones at each training budget (per data mode and context), from the
    checkpoints chosen on validation within each budget of the same runs; and Kendall's tau
    between the ranking at each budget and at the largest, with a 95% bootstrap interval over
    training seeds (each backbone's seeds resampled, its mean return recomputed, the rankings
    compared). Returns (ranking, tau)."""
    from scipy.stats import kendalltau

    long = budget_runs(runs)
    if long.empty:
        return pd.DataFrame(), pd.DataFrame()
    ranking, taus = [], []
    extras = extra_axes(long)
    for values, cell in long.groupby(
        ["data_mode", "context_episodes", *extras], sort=True, dropna=False
    ):
        mode, context, facet = values[0], values[1], dict(zip(extras, values[2:], strict=True))
        budgets = sorted(cell["budget"].unique())
        per_backbone = {
            b: {int(k): g["return_final"].to_numpy(float) for k, g in rows.groupby("budget")}
            for b, rows in cell.groupby("backbone")
        }
        for budget in budgets:
            means = {b: v[budget].mean() for b, v in per_backbone.items() if budget in v}
            order = sorted(means, key=lambda b: -means[b])
            for rank, backbone in enumerate(order, start=1):
                rows = cell[(cell["budget"] == budget) & (cell["backbone"] == backbone)]
                ranking.append(
                    {
                        **facet,
                        "data_mode": mode,
                        "context_episodes": context,
                        "budget": int(budget),
                        "rank": rank,
                        "backbone": backbone,
                        "mean_return_final": means[backbone],
                        "seeds": len(rows),
                        "mean_selected_step": rows["selected_step"].mean(),
                    }
                )
        cap = budgets[-1]
        shared = [b for b, v in per_backbone.items() if all(k in v for k in budgets)]
        if len(shared) < 2:
            continue
        rng = np.random.default_rng(seed)
        for budget in budgets[:-1]:
            point = kendalltau(
                [per_backbone[b][budget].mean() for b in shared],
                [per_backbone[b][cap].mean() for b in shared],
            ).statistic
            draws = []
            for _ in range(reps):
                low_means, cap_means = [], []
                for b in shared:  # one resample of seeds, used at both budgets (paired runs)
                    n = min(len(per_backbone[b][budget]), len(per_backbone[b][cap]))
                    pick = rng.integers(0, n, n)
                    low_means.append(per_backbone[b][budget][:n][pick].mean())
                    cap_means.append(per_backbone[b][cap][:n][pick].mean())
                tau = kendalltau(low_means, cap_means).statistic
                if np.isfinite(tau):
                    draws.append(tau)
            seeds = min(
                min(len(per_backbone[b][budget]), len(per_backbone[b][cap])) for b in shared
            )
            # a bootstrap over fewer than MIN_RUNS_FOR_IQM seeds is no interval (with one seed,
            # every draw is the same): none is given
            enough = bool(draws) and seeds >= MIN_RUNS_FOR_IQM
            low, high = np.percentile(draws, [2.5, 97.5]) if enough else (np.nan, np.nan)
            taus.append(
                {
                    **facet,
                    "data_mode": mode,
                    "context_episodes": context,
                    "budget": int(budget),
                    "against": int(cap),
                    "backbones": len(shared),
                    "seeds": seeds,
                    "kendall_tau": float(point),
                    "ci_low": float(low),
                    "ci_high": float(high),
                }
            )
    return pd.DataFrame(ranking), pd.DataFrame(taus)


def ranking_steps(
    ranking: pd.DataFrame, runs: pd.DataFrame, *, reps: int, seed: int = 0
) -> pd.DataFrame:
    """How sure each step of each budget's ranking is: for every two neighbours in it, the
    probability that a run of the one ranked above scores above a run of the one below (rliable's
    probability of improvement over training seeds, ties half), with a 95% stratified-bootstrap
    interval (each backbone's seeds resampled) from `MIN_RUNS_FOR_IQM` seeds each; none below.
    0.5: no order between them; an interval that holds 0.5 does not order them.

    The bootstrap is drawn here, every resample at once: rliable's own takes about a second a
    pair and a study has ~100 pairs, where the report is made in seconds."""
    from rliable import metrics

    long = budget_runs(runs)
    if ranking.empty or long.empty:
        return pd.DataFrame()
    rng = np.random.default_rng(seed)
    extras = [c for c in ranking.columns if "." in str(c)]
    keys = ["data_mode", "context_episodes", *extras, "budget"]
    steps = []
    for values, cell in ranking.groupby(keys, sort=True, dropna=False):
        where = dict(zip(keys, values, strict=True))
        scores = long
        for key, value in where.items():  # a facet may be NaN, which equals nothing
            scores = scores[scores[key].isna() if pd.isna(value) else scores[key] == value]
        order = cell.sort_values("rank")["backbone"].tolist()
        means = dict(zip(cell["backbone"], cell["mean_return_final"], strict=True))
        for above, below in itertools.pairwise(order):
            x = scores.loc[scores["backbone"] == above, "return_final"].to_numpy(float)
            y = scores.loc[scores["backbone"] == below, "return_final"].to_numpy(float)
            if not len(x) or not len(y):
                continue
            point = float(metrics.probability_of_improvement(x[:, None], y[:, None]))
            low = high = np.nan
            if min(len(x), len(y)) >= MIN_RUNS_FOR_IQM:
                xs = x[rng.integers(0, len(x), (reps, len(x)))][:, :, None]
                ys = y[rng.integers(0, len(y), (reps, len(y)))][:, None, :]
                draws = ((xs > ys) + 0.5 * (xs == ys)).mean(axis=(1, 2))
                low, high = np.percentile(draws, [2.5, 97.5])
            steps.append(
                {
                    **where,
                    "rank": int(cell.loc[cell["backbone"] == above, "rank"].iloc[0]),
                    "above": above,
                    "below": below,
                    # equal means: the ranking's order between the two is arbitrary
                    "equal_means": bool(means[above] == means[below]),
                    "p_above": point,
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "seeds_above": len(x),
                    "seeds_below": len(y),
                }
            )
    return pd.DataFrame(steps)


def peak_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the step and value of its validation peak against its final validation value
    (does in-context ability fade with training?), and where the run stopped."""
    rows = []
    for _, run in runs.iterrows():
        peak, final = run.get("validation_peak"), run.get("validation_final")
        if not isinstance(peak, dict) or not isinstance(final, dict):
            continue
        rows.append(
            {
                "study": run["study"],
                "trial": run["trial"],
                "data_mode": run["data_mode"],
                "backbone": run["backbone"],
                "context_episodes": run["context_episodes"],
                "seed": run["seed"],
                "peak_step": peak["step"],
                "peak_val": peak["value"],
                "final_step": final["step"],
                "final_val": final["value"],
                "final_minus_peak": final["value"] - peak["value"],
                "steps_trained": run.get("steps_trained"),
                "budget_capped": run.get("budget_capped"),
            }
        )
    return pd.DataFrame(rows)


def headline_table(runs: pd.DataFrame, *, reps: int) -> pd.DataFrame:
    """The study's answer in one table, long: per backbone (a row of the headline) and column,
    the final return's fraction of optimal on the held-out split over training seeds (`interval`:
    IQM [95% CI] from 5 runs, else mean [range]). The columns: AD at the cap for each training
    context, AD at each smaller budget for the largest context (the checkpoint chosen on
    validation within it), the lockbox at the cap, ED at the largest context; and a last row, the
    source learner on the same tasks. Runs faceted by a further axis have no headline (empty)."""
    if runs.empty or extra_axes(runs):
        return pd.DataFrame()
    ad = runs[runs["data_mode"] == "ad"]
    contexts = sorted(ad["context_episodes"].dropna().unique())
    if not contexts:
        return pd.DataFrame()
    largest = contexts[-1]
    cells: list[tuple[str, str, pd.Series]] = []  # (row, column, the runs' fractions)
    for backbone, mine in ad.groupby("backbone", sort=True):
        for context in contexts:
            at = mine[mine["context_episodes"] == context]
            cells.append((backbone, f"{context:g} episodes", at["fraction_optimal"]))
        top = mine[mine["context_episodes"] == largest]
        played = budget_runs(top)  # each budget's checkpoint over its run's optimal return
        if not played.empty:
            below = played[played["budget"] < played["budget"].max()]
            for budget, rows in below.groupby("budget"):
                fractions = rows["return_final"] / pd.to_numeric(rows["optimal"], errors="coerce")
                cells.append((backbone, f"{largest:g} episodes, {budget} steps", fractions))
        cells.append((backbone, "lockbox", top.get("lockbox_fraction_optimal", pd.Series())))
        ed = runs[
            (runs["data_mode"] == "ed")
            & (runs["backbone"] == backbone)
            & (runs["context_episodes"] == largest)
        ]
        cells.append((backbone, "ED", ed["fraction_optimal"]))
    # the source learner once per distinct play (its evaluation seeds), as in the curves: every
    # run with the same evaluation seeds played it on the same tasks with the same seeds
    plays = ad[ad["source_return_final"].notna()]
    plays = plays.loc[plays["eval_seeds"].map(_as_key).drop_duplicates().index]
    source = pd.to_numeric(plays["source_return_final"], errors="coerce") / pd.to_numeric(
        plays["optimal"], errors="coerce"
    )
    cells.append(("source learner", f"{largest:g} episodes", source))
    rows = []
    for row, column, values in cells:
        values = pd.to_numeric(values, errors="coerce").dropna()
        if values.empty:
            continue
        point, low, high = interval(values.to_numpy(float), reps=reps)
        rows.append(
            {
                "row": row,
                "column": column,
                "runs": len(values),
                "statistic": statistic_name(len(values)),
                "point": point,
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(rows)


def validation_only_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The grid runs that played no held-out split (a validation-only study, such as a check of
    tuned settings at other contexts with a `scales` axis): per data mode, backbone, context and
    further axis, the chosen checkpoint's validation return over training seeds (mean, min, max)
    and its mean step; with one further axis, `best` marks its value with the highest mean in
    each data mode, backbone and context, and for a `scales` axis `holds` reads factor 1's row
    by the rule fixed before the check (`HOLDS_WITHIN`)."""
    values = pd.to_numeric(runs.get("val_return_final"), errors="coerce")
    keep = (runs["kind"] == "ablation") & (runs["state"] == "COMPLETE") & values.notna()
    runs = runs[keep & pd.to_numeric(runs["return_final"], errors="coerce").isna()]
    if runs.empty:
        return pd.DataFrame()
    extras = extra_axes(runs)
    rows = []
    for key, group in runs.groupby([*AXES, *extras], dropna=False, sort=True):
        scores = pd.to_numeric(group["val_return_final"], errors="coerce")
        rows.append(
            {
                **dict(zip([*AXES, *extras], key, strict=True)),
                "seeds": len(group),
                "mean_val_return": scores.mean(),
                "low": scores.min(),
                "high": scores.max(),
                "selected_step": pd.to_numeric(group["selected_step"], errors="coerce").mean(),
            }
        )
    table = pd.DataFrame(rows)
    if len(extras) == 1:
        best = table.groupby(AXES, dropna=False)["mean_val_return"].transform("max")
        table["best"] = table["mean_val_return"] == best
        if extras[0].endswith(":scale"):  # a check of a tuned setting: does factor 1 hold?
            ones = table[extras[0]] == 1.0
            near = best - table["mean_val_return"] <= HOLDS_WITHIN * best.abs()
            table["holds"] = np.where(ones, np.where(near, "holds", "does not hold"), "")
    return table


HOLDS_WITHIN = 0.10
"""A tuned setting holds at a context when its validation return (factor 1 of a `scales`
check) is the best of the factors or within this share of the best (docs/protocol.md, "Tuned
at one context: the check at the others"); fixed before the check ran."""


def tuning_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per tuning study (one backbone's): its finished trials (complete and pruned), the best
    complete trial's validation return, step and settings, where it came among the finished (by
    trial number: a best found last says more trials might find better), the validation steps at
    which the pruner stopped the others, and the worker-seconds of all its trials."""
    rows = []
    for study, trials in runs[runs["kind"] == "tune"].groupby("study", sort=True):
        finished = trials[trials["state"].isin(["COMPLETE", "PRUNED"])].sort_values("trial")
        values = pd.to_numeric(
            finished["value"].where(finished["state"] == "COMPLETE"), errors="coerce"
        )
        best = finished.loc[values.idxmax()] if values.notna().any() else None
        pruned = finished[finished["state"] == "PRUNED"]
        seconds = pd.to_numeric(trials.get("wall_seconds"), errors="coerce")
        rows.append(
            {
                "study": study,
                "backbone": trials["backbone"].iloc[0],
                "context_episodes": trials["context_episodes"].iloc[0],
                "finished": len(finished),
                "complete": int(values.notna().sum()),
                "pruned": len(pruned),
                "pruned_at": [
                    int(r["pruned_at"])
                    if finite(r.get("pruned_at"))
                    else _last_step(r["validation_curve"])
                    for _, r in pruned.iterrows()
                ],
                "best_trial": None if best is None else int(best["trial"]),
                "best_position": (
                    None if best is None else list(finished["trial"]).index(best["trial"]) + 1
                ),
                "best_value": None if best is None else float(best["value"]),
                "best_step": None if best is None else best.get("selected_step"),
                "best_params": "" if best is None else json.dumps(best["params"], sort_keys=True),
                "worker_seconds": float(seconds.sum()) if seconds is not None else None,
            }
        )
    return pd.DataFrame(rows)


def _last_step(curve: Any) -> Any:
    """The step of a validation curve's last point ([[step, value], ...]), None without one."""
    return curve[-1][0] if isinstance(curve, list) and curve else None


def comparison_table(runs: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Cell by cell (data, backbone, context), this report's completed runs against a reference's
    (the committed results of the same study): seeds, mean final return and range of each, the
    difference of the means, and whether this mean falls in the reference's range."""
    keys = [*AXES, *extra_axes(runs)]

    def cells(frame: pd.DataFrame) -> pd.DataFrame:
        done = completed(frame)
        if done.empty:
            return pd.DataFrame(columns=[*keys, "seeds", "mean", "low", "high"])
        scores = pd.to_numeric(done["return_final"], errors="coerce")
        grouped = scores.groupby([done[k] for k in keys], dropna=False)
        table = grouped.agg(["count", "mean", "min", "max"]).reset_index()
        return table.rename(columns={"count": "seeds", "min": "low", "max": "high"})

    theirs = reference.reindex(columns=list(dict.fromkeys([*reference.columns, *keys])))
    merged = cells(runs).merge(cells(theirs), on=keys, how="outer", suffixes=("", "_reference"))
    merged["difference"] = merged["mean"] - merged["mean_reference"]
    merged["within_reference_range"] = (merged["mean"] >= merged["low_reference"]) & (
        merged["mean"] <= merged["high_reference"]
    )
    return merged.sort_values(keys).reset_index(drop=True)


def trial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every trial, with its config and the commands that rerun it; duplicates and failures named."""
    table = runs[
        [
            "study",
            "kind",
            "trial",
            "state",
            "data_mode",
            "backbone",
            "context_episodes",
            "seed",
            "value",
            "return_final",
            "fraction_optimal",
            "parameters",
            "train_tokens_per_s",
            "eval_steps_per_s",
            "peak_rss_mb",
            "wall_seconds",
            "fit_command",
            "evaluate_command",
            "rerun_command",
        ]
    ].copy()
    table.insert(
        4, "params", runs["params"].map(lambda p: json.dumps(p, sort_keys=True) if p else "")
    )
    return table.sort_values(["study", "trial"], kind="stable")


def finite(value: Any) -> bool:
    """True for a number that is neither None nor NaN."""
    return isinstance(value, (int, float, np.number)) and math.isfinite(float(value))
