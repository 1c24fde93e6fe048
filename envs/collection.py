"""Record learning histories: many learners (or the expert), one per task, stepped in lock-step
through one vector env, into a `Histories`.

Recording is a few NumPy calls per vector step into preallocated `[num_histories, capacity]`
buffers of small dtypes; each sub-env writes at its own position, so episodes of different lengths
(early termination) need no Python work per sub-env.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from envs.base import EnvFamily, Histories, Learner
from envs.vector import TaskVectorEnv

PROGRESS_EVERY = 256  # vector steps between two `progress` calls


def kept_episodes(episodes: int, keep_every: int) -> np.ndarray:
    """The episodes a history records: every `keep_every`-th one counting from the first (the
    untrained learner), plus always the last one (the trained learner)."""
    if episodes < 1 or keep_every < 1:
        raise ValueError(f"episodes and keep_every must be >= 1, got {episodes}, {keep_every}")
    return np.union1d(np.arange(0, episodes, keep_every), [episodes - 1])


def collect_histories(
    family: EnvFamily,
    tasks: np.ndarray,
    learner: Learner | None,
    *,
    episodes: int,
    keep_every: int = 1,
    expert: bool = False,
    seed: int,
    task_index: np.ndarray | None = None,
    progress: Callable[[int], object] | None = None,
) -> Histories:
    """Run one history per row of `tasks` for `episodes` episodes each and record them.

    `learner` (one learner per task, `learner.num_envs == len(tasks)`) acts and learns; with
    `expert=True` the vector env's optimal actions are recorded instead and `learner` may be None.
    Episodes kept: `kept_episodes(episodes, keep_every)`; `learning_curve` holds the return of
    every episode. `task_index[h]` (default `h`) is stored as the task of history `h`.
    `progress(n)` is called every few hundred vector steps with the number of transitions played
    by unfinished histories since the previous call (so `tqdm.update` fits). Deterministic for a
    given `seed` and learner seed.
    """
    num = len(tasks)
    task_index = np.arange(num) if task_index is None else np.asarray(task_index, dtype=np.int64)
    if task_index.shape != (num,):
        raise ValueError(f"task_index must have one entry per task ({num}), got {task_index.shape}")
    kept = kept_episodes(episodes, keep_every)
    keep = np.zeros(episodes + 1, dtype=bool)  # keep[episodes]: finished histories record nothing
    keep[kept] = True

    env = family.make_vector_env(tasks, seed=seed)
    if expert:
        if not isinstance(env, TaskVectorEnv):
            raise ValueError(f"the {family.name} vector env has no expert_actions()")
        act: Callable[[np.ndarray], np.ndarray] = lambda _obs: env.expert_actions()  # noqa: E731
        learn = None
    elif learner is None:
        raise ValueError("collect_histories needs a learner, or expert=True")
    elif getattr(learner, "num_envs", num) != num:
        runs = getattr(learner, "num_envs", None)
        raise ValueError(f"the learner runs {runs} sub-envs, not one per task ({num})")
    else:
        act, learn = learner.act, learner.update
    obs, _ = env.reset(seed=seed)

    # One spare column per history: where a sub-env that is not recording writes (and forgets).
    capacity = len(kept) * family.episode_len
    buffers = {
        "observations": np.zeros((num, capacity + 1), np.min_scalar_type(family.num_observations)),
        "actions": np.zeros((num, capacity + 1), np.min_scalar_type(family.num_actions)),
        "rewards": np.zeros((num, capacity + 1), np.float32),
        "done": np.zeros((num, capacity + 1), bool),
    }
    flat = {key: buffer.reshape(-1) for key, buffer in buffers.items()}
    row_start = np.arange(num) * (capacity + 1)
    length = np.zeros(num, dtype=np.int64)  # steps recorded so far
    episode = np.zeros(num, dtype=np.int64)  # current episode, `episodes` once finished
    returns = np.zeros(num, dtype=np.float32)
    learning_curve = np.zeros((num, episodes), dtype=np.float32)
    unfinished, played, steps = num, 0, 0

    while unfinished:
        actions = act(obs)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        if learn is not None:
            learn(obs, actions, rewards, info["final_obs"], terminated, truncated)
        at = row_start + length
        flat["observations"][at] = obs
        flat["actions"][at] = actions
        flat["rewards"][at] = rewards
        done = info["_final_obs"]
        flat["done"][at] = done
        length += keep[episode]
        returns += rewards
        played += unfinished
        if done.any():
            ended = np.flatnonzero(done & (episode < episodes))
            learning_curve[ended, episode[ended]] = returns[ended]
            returns[done] = 0
            episode[ended] += 1
            unfinished = int((episode < episodes).sum())
        obs = next_obs
        steps += 1
        if progress is not None and (steps % PROGRESS_EVERY == 0 or not unfinished):
            progress(played)
            played = 0

    return _flatten(buffers, length, kept, task_index, learning_curve, capacity)


def _flatten(
    buffers: dict[str, np.ndarray],
    length: np.ndarray,
    kept: np.ndarray,
    task_index: np.ndarray,
    learning_curve: np.ndarray,
    capacity: int,
) -> Histories:
    """The recorded prefix of each history's buffer row, history after history."""
    recorded = np.arange(capacity) < length[:, None]
    done = buffers["done"][:, :capacity][recorded]
    # Every history records exactly the kept episodes, each ending at a done step.
    episode_lengths = np.diff(np.flatnonzero(done), prepend=-1)
    episode = np.repeat(np.tile(kept.astype(np.int32), len(length)), episode_lengths)
    return Histories(
        observations=buffers["observations"][:, :capacity][recorded].astype(np.int32),
        actions=buffers["actions"][:, :capacity][recorded].astype(np.int32),
        rewards=buffers["rewards"][:, :capacity][recorded],
        done=done,
        episode=episode,
        offsets=np.concatenate([[0], np.cumsum(length)]).astype(np.int64),
        task_index=task_index,
        learning_curve=learning_curve,
    )
