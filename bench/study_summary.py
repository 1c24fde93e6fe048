"""Per-trial numbers of finished sweep studies that the report does not print: each trial's mean
return over its first and last 5 in-context episodes (the rise), and the cost of a grid from the
trials' own wall times (mean per backbone x context, summed over the grid's seeds).

    .venv/bin/python bench/study_summary.py --storage sqlite:///runs/sweeps.db --study darkroom_ablation
"""

from __future__ import annotations

import argparse
import collections
import warnings

import numpy as np
import optuna


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///runs/sweeps.db")
    parser.add_argument("--study", action="append", required=True)
    parser.add_argument("--workers", type=int, default=2, help="workers the grid is shared by")
    args = parser.parse_args()
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    for name in args.study:
        study = optuna.load_study(study_name=name, storage=args.storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done and "curve" not in done[0].user_attrs:  # a tuning study plays no test task
            print(f"## {name}: no test curves (a tuning study): `zoo sweep status` prints it")
            continue
        walls: dict[tuple, list[float]] = collections.defaultdict(list)
        seeds: set = set()
        print(f"## {name}: {len(done)} complete trial(s)")
        print("backbone  context  seed  first5  last5  rise  of_optimal  wall_s")
        for t in sorted(done, key=lambda t: t.number):
            p, a = t.params, t.user_attrs
            curve = np.asarray(a["curve"])
            first, last = curve[:5].mean(), curve[-5:].mean()
            print(
                f"{p['backbone']}  {p['context_episodes']:g}  {p['seed']}  {first:.2f}  "
                f"{last:.2f}  {last / max(first, 1e-9):.1f}x  {a['fraction_optimal']:.1%}  "
                f"{a['wall_seconds']:.0f}"
            )
            walls[(p["backbone"], p["context_episodes"])].append(a["wall_seconds"])
            seeds.add(p["seed"])
        total = sum(np.mean(v) * len(seeds) for v in walls.values())
        print(
            f"mean wall time per cell x {len(seeds)} seed(s), summed over {len(walls)} measured "
            f"cell(s): {total:.0f} worker-seconds = {total / args.workers / 60:.1f} min on "
            f"{args.workers} workers"
        )


if __name__ == "__main__":
    main()
