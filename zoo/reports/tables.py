"""The report's tables: one row per configuration (IQM and interval over seeds), the in-context
curves, one row per trial. Every interval is a 95% stratified-bootstrap interval from rliable over
seeds (runs), with the number of seeds stated; a single seed gets its mean and no interval.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd


# -------------------------------------------------------------------------------- statistics
def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that count: complete, not grid duplicates, with a final return and a curve."""
    keep = (runs["state"] == "COMPLETE") & runs["return_final"].notna() & runs["curve"].notna()
    return runs[keep & (runs["kind"] != "tune")].copy()


def interval(scores: np.ndarray, *, reps: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """(point, low, high) of rliable's IQM over runs (axis 0) with its 95% stratified-bootstrap
    interval; for `[runs, K]` the mean per column instead (curves). No interval for one run."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(scores, dtype=float)
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


def summary_table(runs: pd.DataFrame, *, reps: int) -> pd.DataFrame:
    """Backbone x context length: IQM final return [95% CI], seeds, fraction of optimal, cost."""
    rows = []
    keys = ["data_mode", "backbone", "context_episodes"]
    for (mode, backbone, context), group in runs.groupby(keys, dropna=False, sort=True):
        iqm, low, high = interval(group["return_final"].to_numpy(float), reps=reps)
        row = {"label": label(mode, backbone), "data_mode": mode, "backbone": backbone}
        row.update(context_episodes=context, seeds=len(group), iqm_return_final=iqm)
        row.update(ci_low=low, ci_high=high, mean_return_final=group["return_final"].mean())
        fraction = pd.to_numeric(group["fraction_optimal"], errors="coerce").dropna()
        if len(fraction):
            point, f_low, f_high = interval(fraction.to_numpy(float), reps=reps)
            row.update(iqm_fraction_optimal=point, fraction_ci_low=f_low, fraction_ci_high=f_high)
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
        for column in (
            "fraction_optimal",
            "nauc",
            "episodes_to_80",
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


def curve_table(runs: pd.DataFrame, *, reps: int) -> pd.DataFrame:
    """Long table of the in-context curves: mean return per episode and its 95% interval, per
    data mode, backbone and context; the source learner's curve as its own rows."""
    frames = []
    keys = ["data_mode", "backbone", "context_episodes"]
    for (mode, backbone, context), group in runs.groupby(keys, dropna=False, sort=True):
        frames.append(
            _curve_rows(group["curve"], label(mode, backbone), mode, backbone, context, reps)
        )
    sources = runs[runs["source_curve"].notna()]
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
        ]
    ].copy()
    table.insert(
        4, "params", runs["params"].map(lambda p: json.dumps(p, sort_keys=True) if p else "")
    )
    return table.sort_values(["study", "trial"], kind="stable")


def finite(value: Any) -> bool:
    """True for a number that is neither None nor NaN."""
    return isinstance(value, (int, float, np.number)) and math.isfinite(float(value))
