"""A dataset in text: what it holds, and how its source learner learned (`zoo data info`)."""

from __future__ import annotations

import numpy as np

from datamodules.reader import HistoryDataset
from datamodules.storage import DatasetError

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray, *, low: float, high: float) -> str:
    """One block character per value, scaled between `low` and `high`."""
    scale = (np.asarray(values, dtype=np.float64) - low) / max(high - low, 1e-12)
    return "".join(SPARKS[int(i)] for i in np.clip(np.round(scale * 7), 0, 7))


def binned(values: np.ndarray, *, bins: int = 40) -> np.ndarray:
    """Means of at most `bins` consecutive chunks of `values` (a sparkline's columns)."""
    return np.array([chunk.mean() for chunk in np.array_split(values, min(bins, len(values)))])


def curve_points(num_episodes: int, *, points: int = 10) -> np.ndarray:
    """About `points` episode indices spread over the history, first and last included."""
    return np.unique(
        np.linspace(0, num_episodes - 1, min(points, num_episodes)).round().astype(int)
    )


def fraction_of_optimal(dataset: HistoryDataset) -> np.ndarray | None:
    """Learning curves `[H, E]` divided by each history's optimal return, or None if unknown."""
    try:
        optimal = dataset.family.optimal_return(dataset.tasks)[dataset.task_index]
    except DatasetError:
        return None
    return dataset.learning_curves / np.maximum(optimal, 1e-12)[:, None]


def info(dataset: HistoryDataset) -> str:
    m = dataset.manifest
    kept = int(sum(np.count_nonzero(s.done) for s in dataset.shards))
    lines = [
        f"dataset     {dataset.path}",
        f"env         {m.env} ({m.env_id}) {m.env_params}",
        f"split       {m.split}, {dataset.num_tasks} tasks, mode {m.mode}",
        f"learner     {m.learner} {m.learner_params}",
        f"histories   {dataset.num_histories:,} ({m.num_shards} shard(s)), seed {m.seed}",
        f"episodes    {m.episodes_per_history} per history, every {m.keep_every} kept: "
        f"{kept:,} stored episodes",
        f"transitions {dataset.num_steps:,}",
        f"size        {dataset.size_bytes() / 2**20:.1f} MiB on disk",
        f"command     {m.command}",
    ]
    curves = dataset.learning_curves
    if curves.size:
        mean = curves.mean(axis=0)
        fraction = fraction_of_optimal(dataset)
        frac_mean = None if fraction is None else fraction.mean(axis=0)
        lines += [
            "",
            "source learner's learning curve (mean return per episode across histories):",
            f"  {sparkline(binned(mean), low=float(mean.min()), high=float(mean.max()))}  "
            f"{mean[0]:.3g} -> {mean[-1]:.3g}",
            f"  {'episode':>8} {'return':>9} {'of optimal':>11}",
        ]
        for e in curve_points(len(mean)):
            of_optimal = "" if frac_mean is None else f"{frac_mean[e]:.1%}"
            lines.append(f"  {e + 1:>8} {mean[e]:>9.3f} {of_optimal:>11}")
    return "\n".join(lines)
