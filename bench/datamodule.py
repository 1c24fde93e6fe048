"""Benchmark: HistoryDataModule sampling throughput (windows/s and tokens/s) from memory maps.

    .venv/bin/python bench/datamodule.py                                  # small, ~seconds
    .venv/bin/python bench/datamodule.py --histories 1024 --episodes 200 --workers 0 2 --batches 500
    .venv/bin/python bench/datamodule.py --path data/darkroom             # an existing dataset

Collects a Dark Room dataset into a temporary directory (unless --path), then iterates the training
DataLoader for AD windows, ED windows and the episode-shuffle control. Sampling must never be the
bottleneck: compare tokens/s with a training step's (e.g. `zoo fit` logs it per batch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.history import HistoryDataModule
from zoo.collection import CollectConfig, collect


def windows_per_second(dm: HistoryDataModule, *, batches: int) -> float:
    loader = iter(dm.train_dataloader())
    next(loader)  # worker start-up and first page faults are not sampling
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * dm.hparams.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", help="existing dataset (default: collect a temporary one)")
    parser.add_argument("--histories", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--context_episodes", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path
        if path is None:
            path = str(Path(tmp) / "darkroom")
            config = CollectConfig(
                env="darkroom", num_tasks=args.histories, episodes=args.episodes, output=path
            )
            collect(config, command="bench/datamodule.py", progress=False)
        print(f"dataset {path}, context {args.context_episodes} episodes, batch {args.batch_size}")
        variants = {
            "ad": {},
            "ed (last 10 episodes)": {"mode": "ed", "expert_episodes": 10},
            "ad + episode shuffle": {"shuffle_episodes": True},
        }
        for workers in args.workers:
            for name, extra in variants.items():
                dm = HistoryDataModule(
                    path=path,
                    context_episodes=args.context_episodes,
                    batch_size=args.batch_size,
                    num_workers=workers,
                    **extra,
                )
                rate = windows_per_second(dm, batches=args.batches)
                print(
                    f"{name:<24} workers={workers}: {rate:10,.0f} windows/s "
                    f"{rate * dm.context_len:14,.0f} tokens/s"
                )


if __name__ == "__main__":
    main()
