"""Benchmark: vectorised collection (collect_histories + writing shards) against a Python loop over
single registered gymnasium envs driving the same learner, on Dark Room; transitions/s and memory.

    .venv/bin/python bench/collect.py                                   # small, ~seconds
    .venv/bin/python bench/collect.py --histories 2048 --episodes 200   # full size

The loop baseline is `bench/collect_histories.py`'s: `--loop_histories` histories one after
another, each its own `gymnasium.make("zoo/DarkRoom-v0", goal=...)` env and single-env learner;
transitions/s is per-history work, so the ratio compares like with like at any size. That script
times `collect_histories` alone, in memory, for every family; this one adds writing the dataset.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.collect_histories import loop
from zoo.collection import CollectConfig, collect


def vectorised(args: argparse.Namespace, out: Path) -> tuple[int, float]:
    """Transitions written and seconds of the `zoo collect` path (collection + writing shards)."""
    config = CollectConfig(
        env="darkroom",
        num_tasks=args.histories,
        learner="q_learning",
        episodes=args.episodes,
        seed=args.seed,
        num_shards=args.num_shards,
        output=str(out),
    )
    result = collect(config, command="bench/collect.py", overwrite=True, progress=False)
    return result.played, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=256, help="histories, vectorised path")
    parser.add_argument("--loop_histories", type=int, default=4, help="histories, loop baseline")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per history")
    parser.add_argument("--num_shards", type=int, default=1, help="shards, vectorised path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vec_n, vec_s = vectorised(args, Path(tmp) / "bench")
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        vectorised(args, Path(tmp) / "bench-traced")
        traced_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        size_mib = sum(f.stat().st_size for f in Path(tmp, "bench").rglob("*.npy")) / 2**20
    loop_n, loop_s = loop(
        "darkroom", histories=args.loop_histories, episodes=args.episodes, seed=args.seed
    )

    vec_rate, loop_rate = vec_n / vec_s, loop_n / loop_s
    print(f"Dark Room, tabular Q-learning, {args.episodes} episodes per history")
    print(
        f"vectorised collect+write: {args.histories} histories, {vec_n:,} transitions in "
        f"{vec_s:.2f} s = {vec_rate:,.0f} transitions/s ({size_mib:.1f} MiB written)"
    )
    print(
        f"loop over gymnasium envs: {args.loop_histories} histories, {loop_n:,} transitions in "
        f"{loop_s:.2f} s = {loop_rate:,.0f} transitions/s"
    )
    print(f"speed-up: {vec_rate / loop_rate:.1f}x")
    print(
        f"peak memory: process max RSS {rss_mib:.0f} MiB after the vectorised run; "
        f"tracemalloc peak of the vectorised run {traced_mib:.1f} MiB"
    )


if __name__ == "__main__":
    main()
