"""The source learner's own learning curve for a collect config, in memory (nothing is written):
how fast its histories go from near-random to near-optimal, and what an AD context of a few stored
episodes spans of that improvement.

    .venv/bin/python bench/source_curve.py --config configs/collect/key_to_door.yaml
    .venv/bin/python bench/source_curve.py --config configs/collect/key_to_door.yaml \
        --histories 128 --learner_params '{"replay_sweeps": 20}'

Options are `zoo collect`'s (a config file and/or flags); `--histories` plays that many of the
config's histories (task h % num_tasks, as the dataset does), default 256. Prints the mean return
as a fraction of optimal at a few episodes, the first episode at which the mean reaches 50%, 80% and
90% of optimal, and the stored-episode count between the first and the 80% point (what a context
must hold to see the improvement). Bandits: one episode is one pull; the fraction is of the best
arm's mean (random play is about half of it).

`--first_hit` (families whose return is 0 until the goal is reached, e.g. Dark Room Hard) also
prints what the learner does right after it first reaches the goal, and how many of those first
discoveries land on a stored episode (with `keep_every` > 1 the others never reach the dataset):

    .venv/bin/python bench/source_curve.py --config configs/collect/darkroom_hard.yaml --first_hit
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from jsonargparse import ActionConfigFile, ArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.collection import collect_histories, kept_episodes
from envs.learners import make_learner
from zoo.collection import CollectConfig, check_config


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(CollectConfig)
    parser.add_argument("--histories", type=int, default=256)
    parser.add_argument("--window", type=int, default=1, help="episodes in the running mean")
    parser.add_argument(
        "--first_hit", action="store_true", help="the episodes after the first return > 0"
    )
    options = parser.parse_args()
    options.pop("config", None)
    histories = options.pop("histories")
    window = options.pop("window")
    first_hit = options.pop("first_hit")
    config = CollectConfig(**options.as_dict())
    family, tasks, params = check_config(config)
    rows = np.arange(histories) % config.num_tasks
    # independent generators for the learner and the envs, as `zoo collect` spawns them per shard
    env_seed, learner_seed = (int(s) for s in np.random.SeedSequence(config.seed).generate_state(2))
    learner = None
    if not config.expert:
        learner = make_learner(
            config.learner, num_envs=histories, family=family, seed=learner_seed, **params
        )
    start = time.perf_counter()
    result = collect_histories(
        family,
        tasks[rows],
        learner,
        episodes=config.episodes,
        keep_every=config.keep_every,
        expert=config.expert,
        seed=env_seed,
    )
    seconds = time.perf_counter() - start
    optimal = float(family.optimal_return(tasks[rows]).mean())
    curve = result.learning_curve.mean(0) / optimal
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid") if window > 1 else curve
    kept = kept_episodes(config.episodes, config.keep_every)
    points = sorted(
        {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, config.episodes}
        & set(range(1, config.episodes + 1))
    )
    print(
        f"{config.env}, {config.learner} {params}: {histories} histories x {config.episodes} "
        f"episodes in {seconds:.1f} s; optimal {optimal:.3f}"
    )
    print(
        "  fraction of optimal by episode: "
        + "  ".join(f"ep{k}={curve[k - 1]:.0%}" for k in points)
    )
    for level in (0.5, 0.8, 0.9):
        reached = np.flatnonzero(smooth >= level)
        if len(reached):  # the 0-based index of the first running window's last episode
            last = int(reached[0]) + window - 1
            where = f"episode {last + 1} (stored episode {np.searchsorted(kept, last) + 1}"
        else:
            where = "episode never (stored episode -"
        print(
            f"  mean over histories (running mean of {window}) first >= {level:.0%}: "
            f"{where} of {len(kept)}, keep_every {config.keep_every})"
        )
    if first_hit:
        print_first_hit(result.learning_curve, kept)


def print_first_hit(returns: np.ndarray, kept: np.ndarray) -> None:
    """The episodes after each history's first return > 0: how often the learner succeeds again
    (at once, and in every later episode on average), and how many first hits are stored."""
    hit = returns > 0
    found = hit.any(1)
    first = hit.argmax(1)
    rows = np.flatnonzero(found & (first + 1 < returns.shape[1]))
    after = np.array([hit[r, first[r] + 1 :].mean() for r in rows])
    stored = np.isin(first[found], kept)
    print(
        f"  first return > 0: in {found.mean():.1%} of histories, at episode "
        f"{np.median(first[found]) + 1:.0f} (median); return > 0 in the next episode "
        f"{hit[rows, first[rows] + 1].mean():.1%}, in the episodes after it {after.mean():.1%}; "
        f"the first hit is a stored episode in {stored.mean():.1%} of histories"
    )


if __name__ == "__main__":
    main()
