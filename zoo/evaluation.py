"""In-context evaluation: a frozen learner plays held-out tasks for K episodes, learning only from
its context.

One sub-env per task in one vectorised env; one token per step. The context is never cut at an
episode boundary: it belongs to the task, so it starts with the task's first step and carries on.
Two context modes:
- `stream`: `step()` with the backbone state carried through the whole history (recurrent models
  carry their state; the transformer keeps a KV cache of its attention window);
- `window`: at each step a fresh forward over exactly the last `context_len` steps, as in training.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from datamodules.reader import open_dataset
from datamodules.storage import DatasetError
from envs.base import EnvFamily, Split, draw_tasks, make_family
from zoo.errors import CheckpointError, UserError
from zoo.model import InContextLearner, load_learner

ContextMode = Literal["stream", "window"]
CONTEXT_MODES: tuple[str, ...] = ("stream", "window")


class EnvMismatchError(UserError, ValueError):
    """The env asked for is not the one the checkpoint was trained on."""


@dataclasses.dataclass
class Evaluation:
    """What one in-context evaluation plays: shared by `zoo evaluate`, the in-training callback
    and sweep trials."""

    episodes: int = 20
    """In-context episodes per task (K)."""
    tasks: int | None = None
    """Tasks (N), one sub-env each; None: every task of the split exactly once."""
    mode: ContextMode = "stream"
    """Context mode: `stream` (state carried) or `window` (fresh forward over the last steps)."""
    split: Split = "test"
    """`test` (held out), `val` (the run's validation tasks), `ood`, `train`."""
    final_episodes: int = 5
    """Episodes averaged into the final return."""
    seed: int = 0
    """Seed of the task order, the envs and the action sampling."""
    greedy: bool = False
    """Argmax actions instead of sampling."""

    def __post_init__(self) -> None:
        for name in ("episodes", "tasks", "final_episodes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclasses.dataclass
class Rollout:
    """What a frozen learner did, per task (rows) and step (columns), and its episode returns."""

    observations: np.ndarray  # [N, T] int64: o_t
    actions: np.ndarray  # [N, T] int64: a_t
    rewards: np.ndarray  # [N, T] float32: r_t
    done: np.ndarray  # [N, T] bool: a_t ended an episode
    returns: np.ndarray  # [N, K] float64: return of each of the first K episodes of each task
    logits: np.ndarray | None = None  # [N, T, A] float32: the policy's logits, if recorded


def family_of(model: InContextLearner, *, env: str | None = None) -> EnvFamily:
    """The env family a learner was trained on (from its hyper-parameters), checked against `env`."""
    info = model.env
    if not info.get("name"):
        raise CheckpointError(
            "the model records no env (it was not trained through HistoryDataModule); "
            "pass the env family explicitly"
        )
    if env is not None and env != info["name"]:
        raise EnvMismatchError(
            f"the checkpoint was trained on env {info['name']!r}, not {env!r}: evaluate it on "
            f"{info['name']!r} (or drop --env)"
        )
    family = make_family(info["name"], **info.get("params", {}))
    check_compatible(model, family)
    return family


def check_compatible(model: InContextLearner, family: EnvFamily) -> None:
    """Refuse an env whose observation or action space differs from the model's."""
    mine = (model.num_observations, model.num_actions)
    theirs = (family.num_observations, family.num_actions)
    if mine != theirs:
        raise EnvMismatchError(
            f"the model takes {mine[0]} observations and {mine[1]} actions, env {family.name!r} "
            f"has {theirs[0]} and {theirs[1]}: it was trained on another env"
        )
    factors = model.observation_factors
    if len(factors) > 1 and factors != tuple(family.observation_factors):
        raise EnvMismatchError(
            f"the model reads observations as digits {factors}, env {family.name!r} codes them "
            f"as {tuple(family.observation_factors)}: it was trained on another env"
        )


@torch.no_grad()
def run_in_context(
    model: InContextLearner,
    family: EnvFamily,
    tasks: np.ndarray,
    *,
    episodes: int,
    mode: ContextMode = "stream",
    seed: int = 0,
    greedy: bool = False,
    record_logits: bool = False,
    retire: bool = True,
) -> Rollout:
    """Play `episodes` episodes of every task with frozen weights; one sub-env per task.

    The model's state starts once per task, at its first step, and is never reset in between.
    Actions are sampled from the policy (seeded), or its argmax with `greedy`.

    Where episodes end early (Key-to-Door at the door), tasks finish their K episodes at different
    steps. With `retire` a finished task leaves the model's batch (its state rows dropped, once
    an eighth of the batch is done): the model runs only for the tasks still playing, which is
    most of an evaluation's time. Its sub-env plays on to the last task's end with uniform random
    actions (zero logits), steps that no return counts, and every other task's rollout is what
    it is without retiring (the action draws are per row; pinned by a test). A state without
    rows to select (`State.select`) keeps every task in the batch, as `retire=False` does.
    """
    if mode not in CONTEXT_MODES:
        raise ValueError(f"mode must be one of {CONTEXT_MODES}, got {mode!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_compatible(model, family)
    was_training = model.training
    model.eval()
    n, device = len(tasks), model.device
    env = family.make_vector_env(tasks, seed=seed)
    obs, _ = env.reset(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    state = model.initial_state(n) if mode == "stream" else None
    prev_action = torch.full((n,), model.no_action, dtype=torch.long, device=device)
    prev_reward = torch.zeros(n, device=device)
    context = model.context_len
    # window mode: the last `context` steps of every task, oldest first; the newest step's action
    # and reward are filled in once taken (`previous` never reads them for the newest token)
    window_obs = torch.zeros(n, 0, dtype=torch.long, device=device)
    window_actions = torch.zeros(n, 0, dtype=torch.long, device=device)
    window_rewards = torch.zeros(n, 0, device=device)
    returns = np.zeros((n, episodes))
    finished = np.zeros(n, dtype=np.int64)
    running = np.zeros(n)
    trace: dict[str, list[np.ndarray]] = {
        "observations": [],
        "actions": [],
        "rewards": [],
        "done": [],
    }
    logits_trace: list[np.ndarray] = []
    rows = np.arange(n)
    # the tasks the model plays (its batch rows, in this order); the others have finished
    playing = torch.arange(n, device=device)
    if retire and state is not None and not _selectable(state):
        retire = False
    while finished.min() < episodes:
        if retire and n > 0:
            playing, state, windows = _retire(
                playing, finished, episodes, state, (window_obs, window_actions, window_rewards)
            )
            window_obs, window_actions, window_rewards = windows
        observation = torch.as_tensor(obs, dtype=torch.long, device=device)
        mine = observation[playing], prev_action[playing], prev_reward[playing]
        if mode == "stream":
            assert state is not None  # made above for stream mode
            played, state = model.step(*mine, state=state)
        else:
            window_obs = torch.cat([window_obs, mine[0][:, None]], 1)[:, -context:]
            window_actions = torch.cat([window_actions, mine[1][:, None]], 1)[:, -context:]
            window_rewards = torch.cat([window_rewards, mine[2][:, None]], 1)[:, -context:]
            all_logits, _ = model(window_obs, *model.previous(window_actions, window_rewards))
            played = all_logits[:, -1]
        if len(playing) == n:
            logits = played
        else:  # the finished tasks' sub-envs play on at random until the last task is done
            logits = played.new_zeros(n, played.shape[-1])
            logits[playing] = played
        if greedy:
            action = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float().cpu(), -1)
            action = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        obs, reward, terminated, truncated, _ = env.step(action.cpu().numpy())
        done = np.logical_or(terminated, truncated)
        running += reward
        ended = done & (finished < episodes)
        returns[rows[ended], finished[ended]] = running[ended]
        finished += done
        running[done] = 0.0
        prev_action = action
        prev_reward = torch.as_tensor(reward, dtype=prev_reward.dtype, device=device)
        if mode == "window":
            window_actions[:, -1] = prev_action[playing]
            window_rewards[:, -1] = prev_reward[playing]
        trace["observations"].append(observation.cpu().numpy())
        trace["actions"].append(action.cpu().numpy())
        trace["rewards"].append(np.asarray(reward, dtype=np.float32))
        trace["done"].append(done)
        if record_logits:
            logits_trace.append(logits.float().cpu().numpy())
    env.close()
    model.train(was_training)
    return Rollout(
        **{key: np.stack(values, 1) for key, values in trace.items()},
        returns=returns,
        logits=np.stack(logits_trace, 1) if record_logits else None,
    )


def _selectable(state: Any) -> bool:
    """Whether a state can drop batch rows (`State.select`)."""
    try:
        state.select(torch.zeros(0, dtype=torch.long))
    except TypeError:
        return False
    return True


def _retire(
    playing: Tensor,
    finished: np.ndarray,
    episodes: int,
    state: Any,
    windows: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor, Any, tuple[Tensor, Tensor, Tensor]]:
    """Drop the tasks that have played their episodes from the model's batch, once they are at
    least an eighth of it (each drop copies the state)."""
    keep = torch.as_tensor(finished[playing.cpu().numpy()] < episodes)
    done = len(keep) - int(keep.sum())
    if done == 0 or done * 8 < len(keep):
        return playing, state, windows
    kept = torch.nonzero(keep).squeeze(1).to(playing.device)
    if state is not None:
        state = state.select(kept)
    return playing[kept], state, tuple(w[kept] for w in windows)  # type: ignore[return-value]


def summarise(
    returns: np.ndarray,
    optimal: np.ndarray,
    *,
    final_episodes: int = 5,
    random: np.ndarray | None = None,
) -> dict[str, float]:
    """Scalar summaries of per-task, per-episode returns `[N, K]` (means over tasks).

    `return_final`: mean of the last `final_episodes` episodes; `auc`: mean return over all K
    episodes (the area under the curve, per episode); `fraction_optimal`: final over optimal
    return; `nauc`: auc over optimal; `episodes_to_80`: the first episode whose mean return reaches
    80% of optimal (K + 1 when none does). With `random` (each task's expected return under random
    actions, where the family knows it): `above_random`, the final return's share of the way from
    random play to optimal, `(final - random) / (optimal - random)` (0: no better than random).
    """
    k = returns.shape[1]
    curve = returns.mean(0)
    final = returns[:, -min(final_episodes, k) :].mean()
    best = optimal.mean()
    reached = np.flatnonzero(curve >= 0.8 * best) if best > 0 else np.zeros(0, dtype=int)
    summary = {
        "return_first": float(curve[0]),
        "return_final": float(final),
        "auc": float(curve.mean()),
        "fraction_optimal": float(final / best) if best > 0 else float("nan"),
        "nauc": float(curve.mean() / best) if best > 0 else float("nan"),
        # the first episode whose mean return is >= 80% of optimal; K + 1: never within K
        "episodes_to_80": int(reached[0] + 1) if len(reached) else k + 1,
        "optimal": float(best),
    }
    for episode in sorted({1, max(k // 4, 1), max(k // 2, 1), k}):
        summary[f"return_at_{episode}"] = float(curve[episode - 1])
    if random is not None:
        floor = float(np.mean(random))
        summary["random"] = floor
        summary["above_random"] = (
            float((final - floor) / (best - floor)) if best > floor else float("nan")
        )
    return summary


def source_learning_curves(
    model: InContextLearner,
    family: EnvFamily,
    tasks: np.ndarray,
    *,
    episodes: int,
    seed: int = 0,
) -> tuple[str, np.ndarray]:
    """(learner name, returns `[N, episodes]`) of the source learner that made the training data,
    run afresh on `tasks`: the baseline an in-context learner is compared with."""
    from envs.collection import collect_histories
    from envs.learners import make_learner

    dataset = model.env.get("dataset")
    if not dataset:
        raise ValueError("the model records no dataset, so no source learner to compare with")
    manifest = open_dataset(dataset).manifest
    if manifest.mode != "ad":
        raise ValueError(
            f"the model was trained on expert episodes ({dataset}), which no source learner "
            "made: leave out --source_episodes"
        )
    # the learner's and the envs' generators from one seed, independent (the same seed for both
    # correlates a bandit learner's tie-breaking with the payouts: UCB1's first pull scored 81% of
    # optimal on train bandits, where a random arm scores ~40-45%)
    env_seed, learner_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    learner = make_learner(
        manifest.learner,
        num_envs=len(tasks),
        family=family,
        seed=learner_seed,
        **manifest.learner_params,
    )
    histories = collect_histories(
        family,
        tasks,
        learner,
        episodes=episodes,
        keep_every=episodes,  # only the learning curve is needed, which covers every episode
        expert=False,
        seed=env_seed,
        task_index=np.arange(len(tasks)),
    )
    return manifest.learner, np.asarray(histories.learning_curve, dtype=np.float64)


class InContextEvaluation(pl.Callback):
    """At every validation (`trainer.val_check_interval`), the learner plays the run's validation
    tasks in context with frozen weights, logged as `val/return_final`, `val/auc`,
    `val/fraction_optimal`, ...: the in-context metric that model selection monitors
    (`ModelCheckpoint(monitor="val/return_final", mode="max")`, `EarlyStopping`, pruners).

    The validation tasks are training-distribution tasks whose histories the run held out of
    training (`data.val_fraction`); the `test` split is for the chosen model, once, at the end
    (`zoo evaluate`). `split: test` is possible, logged as `test/...`, and is model selection on
    the test set if anything reads it."""

    def __init__(
        self,
        *,
        episodes: int = 20,
        tasks: int | None = None,
        mode: ContextMode = "stream",
        split: Split = "val",
        final_episodes: int = 5,
        seed: int = 0,
        repeats: int = 1,
    ) -> None:
        """
        Args:
            episodes: episodes per task.
            tasks: tasks, one sub-env each; None: every task of the split once.
            mode: context mode, `stream` or `window`.
            split: `val` (the run's validation tasks), or a split of the env (`test`, `ood`).
            final_episodes: episodes averaged into `<split>/return_final`.
            seed: seed of the task order, the env and the action sampling (the same at every
                evaluation, so successive evaluations differ only by the weights).
            repeats: play every task this many times (other action samples), side by side in
                the one vectorised env: a less noisy number for about the same wall time.
        """
        super().__init__()
        for name, value in (("episodes", episodes), ("final_episodes", final_episodes)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if tasks is not None and tasks < 1:
            raise ValueError(f"tasks must be >= 1 (or null: every task once), got {tasks}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if mode not in CONTEXT_MODES:
            raise ValueError(f"mode must be one of {CONTEXT_MODES}, got {mode!r}")
        self.episodes = episodes
        self.tasks = tasks
        self.mode: ContextMode = mode
        self.split: Split = split
        self.final_episodes = final_episodes
        self.seed = seed
        self.repeats = repeats

    def evaluate(self, model: InContextLearner) -> dict[str, float]:
        """The summaries of one evaluation of `model`."""
        family = family_of(model)
        tasks = evaluation_tasks(model, family, self.split, self.tasks, seed=self.seed)
        tasks = np.repeat(tasks, self.repeats, axis=0)
        rollout = run_in_context(
            model, family, tasks, episodes=self.episodes, mode=self.mode, seed=self.seed
        )
        optimal = family.optimal_return(tasks)
        return summarise(rollout.returns, optimal, final_episodes=self.final_episodes)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        summary = self._evaluate_on_rank_zero(pl_module)
        # every rank logs the same numbers: rank zero's, broadcast
        summary = trainer.strategy.broadcast(summary, src=0)
        assert summary is not None  # rank zero's, on every rank
        # logged as validation metrics: in callback_metrics before ModelCheckpoint and
        # EarlyStopping read them at the end of this validation
        pl_module.log_dict(
            {f"{self.split}/{key}": float(value) for key, value in summary.items()},
            batch_size=1,
        )

    @rank_zero_only
    def _evaluate_on_rank_zero(self, pl_module: pl.LightningModule) -> dict[str, float]:
        if not isinstance(pl_module, InContextLearner):
            raise TypeError(f"InContextEvaluation evaluates an InContextLearner, not {pl_module}")
        return self.evaluate(pl_module)


def evaluation_tasks(
    model: InContextLearner,
    family: EnvFamily,
    split: Split,
    num_tasks: int | None = None,
    *,
    seed: int = 0,
) -> np.ndarray:
    """The tasks an evaluation plays: `num_tasks` tasks of `split` in a seeded order, None: every
    task of the split exactly once. `val` is the model's own validation tasks (recorded by its
    datamodule); the others are the env's splits."""
    if split == "val":
        pool = np.asarray(model.env.get("val_tasks") or [])
        if len(pool) == 0:
            raise UserError(
                "the model records no validation tasks (trained with data.val_fraction 0, or "
                "before they were recorded): evaluate a split of the env (--split test)"
            )
        return draw_tasks(pool, len(pool) if num_tasks is None else num_tasks, seed=seed)
    if num_tasks is None:
        num_tasks = family.split_size(split)
        if num_tasks is None:
            raise UserError(
                f"env {family.name!r} draws {split} tasks from a continuous distribution: "
                "give a number of tasks"
            )
    return family.sample_tasks(split, num_tasks, seed=seed)


# ---------------------------------------------------------------- a checkpoint, and its files
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
    the source learner's curve on the same tasks (None: K x the dataset's keep_every, none
    for an expert dataset; 0: none)."""
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
    random = family.random_return(tasks)
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
        "random": None if random is None else random.tolist(),
        "returns": rollout.returns.tolist(),
        "summary": summarise(
            rollout.returns, optimal, final_episodes=settings.final_episodes, random=random
        ),
        "env_steps": int(rollout.observations.size),  # all tasks' steps, played in lock-step
        "seconds": round(seconds, 3),
        "source": None,
    }
    if source_episodes is None:
        try:
            manifest = open_dataset(model.env["dataset"]).manifest
            # an expert dataset's episodes come from no learner: there is no source to show
            keep_every = manifest.keep_every if manifest.mode == "ad" else None
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
