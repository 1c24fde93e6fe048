"""Benchmark: in-context evaluation speed (env steps/s over all tasks) per backbone and context mode.

    .venv/bin/python bench/evaluate.py                                    # tiny presets, ~seconds
    .venv/bin/python bench/evaluate.py --size 100k --tasks 64 --episodes 10 --context_len 80
    .venv/bin/python bench/evaluate.py --env key_to_door --size 100k --tasks 1296 --episodes 4 \
        --context_len 200 --backbones transformer --modes stream   # Key-to-Door's reference shapes
    (add --profile for torch.profiler's table of where each run's CPU time went)

Untrained models (Dark Room by default): the speed of `stream` (one `step()` per token, carried state) and
`window` (a fresh forward over the last `context_len` steps at every step) does not depend on the
weights. Steps/s counts every sub-env's step (tasks x steps per second).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbones import BACKBONES
from backbones.presets import load_preset, preset_path
from envs import make_family
from zoo.evaluation import run_in_context
from zoo.model import InContextLearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="darkroom", help="task family (`zoo envs`)")
    parser.add_argument("--size", default="tiny", help="preset size: tiny, 100k, 400k, 1.6m")
    parser.add_argument("--backbones", nargs="+", default=sorted(BACKBONES))
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--context_len", type=int, default=80)
    parser.add_argument("--modes", nargs="+", default=["stream", "window"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops")
    args = parser.parse_args()

    family = make_family(args.env)
    tasks = family.sample_tasks("test", args.tasks, seed=0)
    print(
        f"{args.env}, {args.tasks} tasks x {args.episodes} episodes, context {args.context_len}, "
        f"{args.size} presets, {args.device}, {torch.get_num_threads()} threads, "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for name in args.backbones:
        model = InContextLearner(
            backbone=load_preset(preset_path(name, args.size)),
            num_observations=family.num_observations,
            num_actions=family.num_actions,
            context_len=args.context_len,
            observation_factors=tuple(family.observation_factors),
        ).to(args.device)
        for mode in args.modes:
            profiler = (
                torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                if args.profile
                else None
            )
            with profiler or contextlib.nullcontext():
                start = time.perf_counter()
                rollout = run_in_context(model, family, tasks, episodes=args.episodes, mode=mode)
                seconds = time.perf_counter() - start
            steps = rollout.actions.shape[1]
            print(
                f"{name:<18} {mode:<7} {rollout.actions.size / seconds:12,.0f} steps/s "
                f"({1e3 * seconds / steps:.1f} ms per lock-step of all tasks, {steps} of them)"
            )
            if profiler is not None:
                table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
                print(table)


if __name__ == "__main__":
    main()
