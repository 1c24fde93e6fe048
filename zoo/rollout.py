"""Playing a frozen learner in context: one sub-env per task in one vectorised env, one token
per step, the context never cut at an episode boundary (it belongs to the task). Two context modes:
- `stream`: `step()` with the backbone state carried through the whole history (recurrent models
  carry their state; the transformer keeps a KV cache of its attention window);
- `window`: at each step a fresh forward over exactly the last `context_len` steps, as in training.
Also: which env a learner was trained on, which tasks an evaluation plays, the summaries of the
returns, and the source learner on the same tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from datamodules.reader import open_dataset
from envs.base import EnvFamily, Split, draw_tasks, make_family
from zoo.errors import CheckpointError, UserError
from zoo.model import InContextLearner

ContextMode = Literal["stream", "window"]
CONTEXT_MODES: tuple[str, ...] = ("stream", "window")


class EnvMismatchError(UserError, ValueError):
    """The env asked for is not the one the checkpoint was trained on."""


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
    context: _Stream | _Window = _Stream(model, n) if mode == "stream" else _Window(model, n)
    retire = retire and n > 0 and context.selectable()
    prev_action = torch.full((n,), model.no_action, dtype=torch.long, device=device)
    prev_reward = torch.zeros(n, device=device)
    tally = _Tally(n, episodes)
    trace = _Trace(record_logits)
    # the tasks the model plays (its batch rows, in this order); the others have finished
    playing = torch.arange(n, device=device)
    while tally.playing():
        if retire:
            playing = _retire(playing, tally.finished < episodes, context)
        observation = torch.as_tensor(obs, dtype=torch.long, device=device)
        played = context.logits(observation[playing], prev_action[playing], prev_reward[playing])
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
        tally.add(reward, done)
        prev_action = action
        prev_reward = torch.as_tensor(reward, dtype=prev_reward.dtype, device=device)
        context.taken(prev_action[playing], prev_reward[playing])
        trace.add(observation, action, reward, done, logits)
    env.close()
    model.train(was_training)
    return trace.rollout(tally.returns)


class _Stream:
    """`stream`: one `step()` a step, the backbone's state carried through the whole history."""

    def __init__(self, model: InContextLearner, n: int) -> None:
        self.model, self.state = model, model.initial_state(n)

    def selectable(self) -> bool:
        """Whether the state can drop batch rows (`State.select`)."""
        try:
            self.state.select(torch.zeros(0, dtype=torch.long))
        except TypeError:
            return False
        return True

    def logits(self, observation: Tensor, action: Tensor, reward: Tensor) -> Tensor:
        logits, self.state = self.model.step(observation, action, reward, state=self.state)
        return logits

    def taken(self, action: Tensor, reward: Tensor) -> None:
        """The state reads the action and reward with the next observation."""

    def keep(self, rows: Tensor) -> None:
        self.state = self.state.select(rows)


class _Window:
    """`window`: at each step a fresh forward over exactly the last `context_len` steps, oldest
    first, as in training. The newest step's action and reward are filled in once taken
    (`previous` never reads them for the newest token)."""

    def __init__(self, model: InContextLearner, n: int) -> None:
        self.model, self.size, device = model, model.context_len, model.device
        self.observations = torch.zeros(n, 0, dtype=torch.long, device=device)
        self.actions = torch.zeros(n, 0, dtype=torch.long, device=device)
        self.rewards = torch.zeros(n, 0, device=device)

    def selectable(self) -> bool:
        return True

    def logits(self, observation: Tensor, action: Tensor, reward: Tensor) -> Tensor:
        self.observations = torch.cat([self.observations, observation[:, None]], 1)[:, -self.size :]
        self.actions = torch.cat([self.actions, action[:, None]], 1)[:, -self.size :]
        self.rewards = torch.cat([self.rewards, reward[:, None]], 1)[:, -self.size :]
        logits, _ = self.model(self.observations, *self.model.previous(self.actions, self.rewards))
        return logits[:, -1]

    def taken(self, action: Tensor, reward: Tensor) -> None:
        self.actions[:, -1] = action
        self.rewards[:, -1] = reward

    def keep(self, rows: Tensor) -> None:
        self.observations, self.actions, self.rewards = (
            self.observations[rows],
            self.actions[rows],
            self.rewards[rows],
        )


class _Tally:
    """Each task's episodes so far and the return of each of its first K."""

    def __init__(self, n: int, episodes: int) -> None:
        self.episodes = episodes
        self.returns = np.zeros((n, episodes))
        self.finished = np.zeros(n, dtype=np.int64)
        self.running = np.zeros(n)

    def playing(self) -> bool:
        """Whether a task has episodes left to play."""
        return bool(self.finished.min() < self.episodes)

    def add(self, reward: np.ndarray, done: np.ndarray) -> None:
        self.running += reward
        ended = done & (self.finished < self.episodes)
        self.returns[np.flatnonzero(ended), self.finished[ended]] = self.running[ended]
        self.finished += done
        self.running[done] = 0.0


class _Trace:
    """Every step's observations, actions, rewards, ends (and logits) of every task."""

    def __init__(self, record_logits: bool) -> None:
        self.steps: dict[str, list[np.ndarray]] = {
            "observations": [],
            "actions": [],
            "rewards": [],
            "done": [],
        }
        self.logits: list[np.ndarray] | None = [] if record_logits else None

    def add(
        self, observation: Tensor, action: Tensor, reward: Any, done: np.ndarray, logits: Tensor
    ) -> None:
        self.steps["observations"].append(observation.cpu().numpy())
        self.steps["actions"].append(action.cpu().numpy())
        self.steps["rewards"].append(np.asarray(reward, dtype=np.float32))
        self.steps["done"].append(done)
        if self.logits is not None:
            self.logits.append(logits.float().cpu().numpy())

    def rollout(self, returns: np.ndarray) -> Rollout:
        return Rollout(
            **{key: np.stack(values, 1) for key, values in self.steps.items()},
            returns=returns,
            logits=None if self.logits is None else np.stack(self.logits, 1),
        )


def _retire(playing: Tensor, unfinished: np.ndarray, context: _Stream | _Window) -> Tensor:
    """Drop the tasks that have played their episodes from the model's batch (and the context's),
    once they are at least an eighth of it (each drop copies the state). Returns the tasks still
    in the batch."""
    keep = torch.as_tensor(unfinished[playing.cpu().numpy()])
    done = len(keep) - int(keep.sum())
    if done == 0 or done * 8 < len(keep):
        return playing
    kept = torch.nonzero(keep).squeeze(1).to(playing.device)
    context.keep(kept)
    return playing[kept]


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
