"""`zoo evaluate CKPT`: in-context learning curves of a checkpoint on held-out tasks.

Writes to `--out`: `returns.json` (returns per task per episode, summaries, settings),
`returns.csv` (one row per task and episode, in-context and source learner), `curve.png` (the
in-context curve beside the source learner's learning curve on the same tasks).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ArgumentParser, UsageError, is_user_error, one_line
from zoo.evaluation import (
    CONTEXT_MODES,
    Evaluation,
    evaluation_tasks,
    family_of,
    run_in_context,
    source_learning_curves,
    summarise,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="zoo evaluate",
        description="In-context evaluation of a checkpoint on held-out tasks, frozen weights.",
    )
    parser.add_argument("checkpoint", help="a checkpoint written by `zoo fit` (.ckpt)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task (K)")
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="tasks (N), one sub-env each (default: every task of the split once)",
    )
    parser.add_argument("--mode", choices=CONTEXT_MODES, default="stream", help="context mode")
    parser.add_argument(
        "--split",
        choices=("test", "ood", "val", "train"),
        default="test",
        help="test: held out; val: the run's validation tasks (for model selection)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of tasks, envs and sampling")
    parser.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    parser.add_argument(
        "--final_episodes", type=int, default=5, help="episodes averaged into the final return"
    )
    parser.add_argument(
        "--env",
        help="the env the checkpoint must have been trained on (refused if it was not)",
    )
    parser.add_argument(
        "--source_episodes",
        type=int,
        help="episodes of the source learner's curve (default: K x the dataset's keep_every; "
        "0 skips it)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--out", type=Path, help="output directory (default: eval-<mode> beside the checkpoint)"
    )
    args = parser.parse_args(argv)
    for name in ("episodes", "tasks", "final_episodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def settings_of(args: argparse.Namespace) -> Evaluation:
    """The evaluation settings a `zoo evaluate` command line asks for."""
    return Evaluation(
        episodes=args.episodes,
        tasks=args.tasks,
        mode=args.mode,
        split=args.split,
        final_episodes=args.final_episodes,
        seed=args.seed,
        greedy=args.greedy,
    )


def evaluate_checkpoint(
    checkpoint: str | Path,
    settings: Evaluation,
    *,
    env: str | None = None,
    source_episodes: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Play `settings` with the frozen learner of `checkpoint`; return everything `returns.json`
    holds. `env`: the env the checkpoint must have been trained on; `source_episodes`: episodes of
    the source learner's curve on the same tasks (None: K x the dataset's keep_every; 0: none)."""
    from datamodules.storage import DatasetError, open_dataset
    from zoo.model import load_learner

    model = load_learner(str(checkpoint), map_location=device)
    family = family_of(model, env=env)
    tasks = evaluation_tasks(model, family, settings.split, settings.tasks, seed=settings.seed)
    started = time.perf_counter()
    rollout = run_in_context(
        model,
        family,
        tasks,
        episodes=settings.episodes,
        mode=settings.mode,
        seed=settings.seed,
        greedy=settings.greedy,
    )
    seconds = time.perf_counter() - started
    optimal = family.optimal_return(tasks)
    result: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "env": model.env,
        "mode": settings.mode,
        "split": settings.split,
        "seed": settings.seed,
        "greedy": settings.greedy,
        "episodes": settings.episodes,
        "tasks": tasks.tolist(),
        "optimal": optimal.tolist(),
        "returns": rollout.returns.tolist(),
        "summary": summarise(rollout.returns, optimal, final_episodes=settings.final_episodes),
        "env_steps": int(rollout.observations.size),  # all tasks' steps, played in lock-step
        "seconds": round(seconds, 3),
        "source": None,
    }
    if source_episodes is None:
        try:
            keep_every = open_dataset(model.env["dataset"]).manifest.keep_every
        except (DatasetError, KeyError):
            keep_every = None  # the training data is not here: no source curve by default
        source_episodes = settings.episodes * keep_every if keep_every else 0
    if source_episodes > 0:
        learner, curves = source_learning_curves(
            model, family, tasks, episodes=source_episodes, seed=settings.seed
        )
        result["source"] = {
            "learner": learner,
            "episodes": source_episodes,
            "returns": curves.tolist(),
            "summary": summarise(curves, optimal, final_episodes=settings.final_episodes),
        }
    return result


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """returns.json, returns.csv and curve.png under `out`."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "returns.json").write_text(json.dumps(result, indent=1) + "\n")
    frames = [_long_table(np.asarray(result["returns"]), "in_context")]
    if result["source"]:
        frames.append(_long_table(np.asarray(result["source"]["returns"]), "source"))
    pd.concat(frames).to_csv(out / "returns.csv", index=False)
    plot_curves(result, out / "curve.png")


def _long_table(returns: np.ndarray, curve: str) -> Any:
    import pandas as pd

    tasks, episodes = np.meshgrid(
        np.arange(returns.shape[0]), np.arange(1, returns.shape[1] + 1), indexing="ij"
    )
    return pd.DataFrame(
        {
            "curve": curve,
            "task": tasks.ravel(),
            "episode": episodes.ravel(),
            "return": returns.ravel(),
        }
    )


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """The in-context curve (frozen weights) beside the source learner's, mean and 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("in-context, frozen weights", np.asarray(result["returns"]))]
    if result["source"]:
        name = result["source"]["learner"]
        panels.append((f"source learner ({name})", np.asarray(result["source"]["returns"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    optimal = float(np.mean(result["optimal"]))
    for ax, (title, returns) in zip(axes, panels, strict=True):
        episodes = np.arange(1, returns.shape[1] + 1)
        mean = returns.mean(0)
        half = 1.96 * returns.std(0, ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else 0
        ax.plot(episodes, mean)
        ax.fill_between(episodes, mean - half, mean + half, alpha=0.25)
        ax.axhline(optimal, color="grey", linestyle="--", linewidth=1, label="optimal")
        ax.set_title(title)
        ax.set_xlabel("episode")
    axes[0].set_ylabel(f"return ({len(result['returns'])} {result['split']} tasks)")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"{result['env'].get('name', '')}: {result['mode']} context")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out = args.out or Path(args.checkpoint).resolve().parent.parent / f"eval-{args.mode}"
    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            settings_of(args),
            env=args.env,
            source_episodes=args.source_episodes,
            device=args.device,
        )
    except ValueError as e:  # e.g. a split the env does not have
        if is_user_error(e):  # already says what to fix (an env mismatch)
            raise
        raise UsageError(one_line(e)) from e
    write_outputs(result, out)
    summary = result["summary"]
    print(
        f"{result['env']['name']} ({args.mode}, {len(result['tasks'])} {args.split} tasks, {args.episodes} "
        f"episodes): return first {summary['return_first']:.3f}, final "
        f"{summary['return_final']:.3f}, auc {summary['auc']:.3f}, "
        f"{summary['fraction_optimal']:.1%} of optimal"
    )
    if result["source"]:
        source = result["source"]["summary"]
        print(
            f"source learner {result['source']['learner']} ({result['source']['episodes']} "
            f"episodes): final {source['return_final']:.3f}, auc {source['auc']:.3f}"
        )
    print(f"wrote {out}/returns.json, returns.csv, curve.png")
    return 0
