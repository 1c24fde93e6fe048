"""A family's reference score from `bench/reference.sh` runs: the in-context curve's key points and
the score per evaluation seed, and, given several runs (training seeds), the mean over every
(training seed, evaluation seed) cell and rliable's IQM over training seeds with its 95%
stratified-bootstrap interval (each seed's score the mean over its evaluation seeds), as the
report computes it.

    .venv/bin/python bench/reference_score.py key_to_door ad runs/reference/key_to_door
    .venv/bin/python bench/reference_score.py darkroom_hard ad runs/exp/darkroom_hard_mamba \
        runs/exp/darkroom_hard_mamba_seed1 runs/exp/darkroom_hard_mamba_seed2

Scores: darkroom, key_to_door: the final return (last `--final` episodes) as a fraction of
optimal; darkroom_hard: the final success rate (return 1 = goal reached, optimal 1); bandit
(`ood` split): (r - r_random) / (r_UCB - r_random) over the last `--final` pulls, UCB being the
source learner on the same bandits. Dark Room Hard also prints how many tasks found the goal at
all, and how many found it but then missed it in most of the final episodes (lost it).

The plays are `zoo run`'s (`<run>/<kind>/test-step<N>-seed<seed>/`, or `ood-...`), or, after
`STAGE=evaluate`, `<run>/<kind>/eval-<seed>/`.
`--eval NAME` reads `<run>/<kind>/NAME-<seed>/` instead: other
plays of the same checkpoints, e.g. of the validation tasks to compare variants without a test task
(`zoo evaluate <run>/ad/selected/step*.ckpt --split val --episodes 80 --seed S
--out <run>/ad/val80-S`, then `--eval val80`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("darkroom", "key_to_door", "darkroom_hard", "bandit")


def returns_of(run: Path, kind: str, seed: int, family: str, name: str = "eval") -> dict[str, Any]:
    path = run / kind / f"{name}-{seed}" / "returns.json"
    plays = sorted((run / kind).glob(f"test-step*-seed{seed}/returns.json"))
    plays += sorted((run / kind).glob(f"ood-step*-seed{seed}/returns.json"))
    if name == "eval" and not path.is_file() and len(plays) == 1:
        path = plays[0]  # `zoo run`'s play of its chosen checkpoint under this seed
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        how = f"run bench/reference.sh {family} {kind}"
        if name != "eval":
            how = f"write it with `zoo evaluate <checkpoint> --seed {seed} --out {path.parent}`"
        sys.exit(f"no {kind} evaluation at {path}: {how}")


def seeds_of(run: Path, kind: str) -> list[int]:
    """The evaluation seeds `zoo run` played a run under (its record's), else 0, 1, 2."""
    record = run / kind / "record.json"
    if record.is_file():
        seeds = (json.loads(record.read_text()).get("protocol") or {}).get("eval_seeds")
        if seeds:
            return [int(s) for s in seeds]
    return [0, 1, 2]


def run_scores(
    run: Path, family: str, kind: str, final: int, seeds: list[int], name: str = "eval"
) -> list[float]:
    """Print one run's curve and score per evaluation seed (the plays in `<name>-<seed>/`);
    return the scores."""
    scores = []
    for seed in seeds:
        result = returns_of(run, kind, seed, family, name)
        returns = np.asarray(result["returns"])
        curve, k = returns.mean(0), returns.shape[1]
        optimal = float(np.mean(result["optimal"]))
        points = sorted({1, 2, 5, 10, 20, k // 2, k} & set(range(1, k + 1)))
        print(
            f"{kind}, evaluation seed {result['seed']}: return by episode (mean of "
            f"{len(returns)} {result['split']} tasks, {result['mode']}, optimal {optimal:.3f}):"
        )
        print("  " + "  ".join(f"ep{p}={curve[p - 1]:.2f}" for p in points))
        last = float(returns[:, -final:].mean())
        source = np.asarray(result["source"]["returns"]) if result["source"] else None
        if family == "bandit":  # normalised to the source (UCB) on the same bandits, 0 = random
            # ED's model learnt from no learner: its UCB is the AD run's, on the same bandits
            ucb_of = result if source is not None else returns_of(run, "ad", seed, family, name)
            if ucb_of["tasks"] != result["tasks"] or not ucb_of["source"]:
                sys.exit(
                    "the bandit score needs UCB on the same bandits: run the ad reference "
                    f"into {run} first"
                )
            random = float(np.asarray(result["tasks"]).mean())
            ucb = float(np.asarray(ucb_of["source"]["returns"])[:, k - final : k].mean())
            score = (last - random) / (ucb - random)
            print(
                f"  last {final} pulls: {last:.3f}; random arm {random:.3f}, "
                f"{ucb_of['source']['learner']} {ucb:.3f}: score {score:.2f} of UCB"
            )
        else:
            score = last / optimal
            print(
                f"  final (last {final}) {last:.3f} = {score:.1%} of optimal, "
                f"auc {result['summary']['auc']:.3f}"
            )
        if family == "darkroom_hard":  # success (1) or not (0) per episode
            found = returns.max(1) > 0
            kept = returns[:, -final:].mean(1) >= 0.5
            print(
                f"  goal reached in some episode: {found.mean():.0%} of tasks; reached but "
                f"missed in most of the last {final} episodes: {(found & ~kept).mean():.0%}"
            )
        scores.append(score)
        if source is not None and family != "bandit":
            reach = np.flatnonzero(source.mean(0) >= 0.8 * optimal)
            print(
                f"  source learner ({result['source']['learner']}) on the same tasks: "
                f"ep1={source.mean(0)[0]:.2f} ep{source.shape[1]}={source.mean(0)[-1]:.2f}, "
                f"first episode >= 80% of optimal: {reach[0] + 1 if len(reach) else 'never'}"
            )
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("kind", choices=("ad", "ed"))
    parser.add_argument("runs", nargs="+", type=Path, help="bench/reference.sh OUT directories")
    parser.add_argument(
        "--final",
        type=int,
        default=None,
        help="episodes (bandit: pulls) the score averages (default 5; bandit 20)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="evaluation seeds (default: each run's own, from its record.json; else 0 1 2)",
    )
    parser.add_argument(
        "--eval",
        default="eval",
        metavar="NAME",
        help="the plays to score: <run>/<kind>/NAME-<seed>/ (default: the script's eval-<seed>)",
    )
    args = parser.parse_args(argv)
    final = args.final or (20 if args.family == "bandit" else 5)
    bandit = args.family == "bandit"
    fmt = (lambda s: f"{s:.2f}") if bandit else (lambda s: f"{s:.1%}")
    what = "of UCB" if bandit else "of optimal"
    per_run = []
    for run in args.runs:
        if len(args.runs) > 1:
            print(f"## {run}")
        seeds = args.seeds or seeds_of(run, args.kind)
        scores = run_scores(run, args.family, args.kind, final, seeds, args.eval)
        per_run.append(scores)
        print(
            f"{args.family} {args.kind}: final score {fmt(float(np.mean(scores)))} {what} on "
            f"average over {len(scores)} evaluation seeds ({', '.join(fmt(s) for s in scores)})"
        )
    if len(per_run) > 1:
        from reporting.tables import MIN_RUNS_FOR_IQM, interval

        cells = np.asarray(per_run)  # [training seeds, evaluation seeds]
        point, low, high = interval(cells.mean(1), reps=2000)
        spread = (
            f"IQM over training seeds {fmt(point)} [95% CI {fmt(low)}, {fmt(high)}]"
            if len(per_run) >= MIN_RUNS_FOR_IQM
            else f"range over the {len(per_run)} training seeds [{fmt(low)}, {fmt(high)}] "
            f"(an IQM and its interval need {MIN_RUNS_FOR_IQM})"
        )
        print(
            f"{args.family} {args.kind} over {len(per_run)} training seeds x {cells.shape[1]} "
            f"evaluation seeds: mean {fmt(float(cells.mean()))} {what}; {spread}; per training seed "
            f"{', '.join(fmt(s) for s in cells.mean(1))}; cells {fmt(cells.min())} to "
            f"{fmt(cells.max())}"
        )


if __name__ == "__main__":
    main()
