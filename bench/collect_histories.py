"""Benchmark: in-memory `collect_histories` (vector env + vectorised learner + recording) per family,
against a loop over single registered gymnasium envs with the same learner; transitions/s.

    .venv/bin/python bench/collect_histories.py                                   # small, seconds
    .venv/bin/python bench/collect_histories.py --histories 2048 --episodes 200   # the target size

The target: Dark Room, 2048 histories x 200 episodes (8.2M transitions) in under 10 s on 2 cores.
The loop baseline steps `--loop_histories` histories one at a time (transitions/s is per-history
work, so the ratio compares like with like).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs import make_family
from envs.collection import collect_histories
from envs.learners import make_learner

LEARNER = {"darkroom": "q_learning", "darkroom_hard": "q_learning", "key_to_door": "q_learning"}


def vectorised(name: str, *, histories: int, episodes: int, seed: int) -> tuple[int, float]:
    family = make_family(name)
    tasks = family.sample_tasks("train", histories, seed=seed)
    learner_name = LEARNER.get(name, "thompson")
    learner = make_learner(learner_name, num_envs=histories, family=family, seed=seed)
    start = time.perf_counter()
    result = collect_histories(family, tasks, learner, episodes=episodes, seed=seed)
    return result.num_steps, time.perf_counter() - start


def loop(name: str, *, histories: int, episodes: int, seed: int) -> tuple[int, float]:
    """One `gymnasium.make` env and one single-env learner per history, stepped in Python."""
    family = make_family(name)
    tasks = family.sample_tasks("train", histories, seed=seed)
    start, transitions = time.perf_counter(), 0
    for h, task in enumerate(tasks):
        env = family.make_env(task)
        learner = make_learner(LEARNER.get(name, "thompson"), num_envs=1, family=family, seed=h)
        obs, _ = env.reset(seed=seed + h)
        for _ in range(episodes):
            done = False
            while not done:
                action = int(learner.act(np.array([obs]))[0])
                next_obs, reward, terminated, truncated, _ = env.step(action)
                learner.update(
                    np.array([obs]),
                    np.array([action]),
                    np.array([reward], dtype=np.float32),
                    np.array([next_obs]),
                    np.array([terminated]),
                    np.array([truncated]),
                )
                done, transitions = terminated or truncated, transitions + 1
                obs = env.reset()[0] if done else next_obs
    return transitions, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=256)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--loop_histories", type=int, default=2)
    parser.add_argument("--envs", nargs="+", default=["darkroom", "key_to_door", "bandit"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.envs:
        size = {"episodes": args.episodes, "seed": args.seed}
        vec_n, vec_s = vectorised(name, histories=args.histories, **size)
        loop_n, loop_s = loop(name, histories=args.loop_histories, **size)
        print(
            f"{name:>13}: collect_histories {args.histories} x {args.episodes} episodes = "
            f"{vec_n:,} transitions in {vec_s:.2f} s = {vec_n / vec_s:,.0f}/s; "
            f"gymnasium loop {loop_n / loop_s:,.0f}/s; speed-up {vec_n / vec_s / (loop_n / loop_s):.0f}x"
        )


if __name__ == "__main__":
    main()
