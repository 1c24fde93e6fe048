"""Bernoulli multi-armed bandits: an episode is one pull, a learning history is many pulls.

A task is the vector of arm means. Train and test tasks favour the odd arms (their means are
uniform on [0, 1], the even arms' on [0, `unfavoured_max`]); the `ood` split favours the even arms,
so an in-context learner that only memorised "pull an odd arm" fails there.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import DiscreteValue, EnvFamily, Split, draw_task, register_env
from envs.vector import TaskVectorEnv

_SPLIT_STREAM = {"train": 0, "test": 1, "ood": 2}


def _check_means(means: Any) -> np.ndarray:
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 1 or len(means) < 2 or ((means < 0) | (means > 1)).any():
        raise ValueError(f"means must be at least 2 arm probabilities in [0, 1], got {means!r}")
    return means


class BanditEnv(gym.Env[DiscreteValue, DiscreteValue]):
    """One bandit: `gymnasium.make("zoo/Bandit-v0", means=(0.1, 0.9, ...))`; each step is a pull,
    pays 1 with the arm's probability and ends the episode. The observation is always 0. Without
    `means`, every `reset(seed=...)` draws a bandit of `num_arms` arms from the family's `split`
    (`info["task"]` says which)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}  # type: ignore[misc]  # gymnasium annotates this class-level default per instance

    def __init__(self, *, means: Any = None, num_arms: int = 10, split: Split = "train") -> None:
        self._tasks = None if means is not None else (Bandit(num_arms=num_arms), split)
        if self._tasks is not None:
            self._tasks[0].sample_tasks(split, 1, seed=0)  # a clear error for an unknown split
            means = np.full(num_arms, 0.5)  # replaced at every reset
        self.means = _check_means(means)
        self.observation_space = gym.spaces.Discrete(1)
        self.action_space = gym.spaces.Discrete(len(self.means))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        if self._tasks is not None:
            self.means = draw_task(*self._tasks, self.np_random)
        return 0, {"task": self.means.copy()}

    def step(self, action: DiscreteValue) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid arm {action!r}; arms are 0..{len(self.means) - 1}")
        reward = float(self.np_random.random() < self.means[action])
        return 0, reward, True, False, {}


class BanditVectorEnv(TaskVectorEnv):
    """Many bandits at once; `tasks` is `[num_envs, num_arms]` arm means. Every step ends an episode."""

    def __init__(self, *, tasks: np.ndarray, seed: int | None = None) -> None:
        super().__init__(tasks=tasks, num_observations=1, num_actions=tasks.shape[1], seed=seed)
        self._rows = np.arange(self.num_envs)
        self._best = tasks.argmax(axis=1)

    def expert_actions(self) -> np.ndarray:
        """The arm with the highest mean."""
        return self._best.copy()

    def _reset_all(self) -> np.ndarray:
        return np.zeros(self.num_envs, dtype=np.int64)

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        pays = self.np_random.random(self.num_envs) < self.tasks[self._rows, actions]
        obs = np.zeros(self.num_envs, dtype=np.int64)
        never = np.zeros(self.num_envs, dtype=bool)
        return obs, pays.astype(np.float32), ~never, never

    def _autoreset(self, done: np.ndarray, final_obs: np.ndarray) -> np.ndarray:
        return np.zeros(self.num_envs, dtype=np.int64)


@register_env("bandit")
@dataclasses.dataclass(frozen=True)
class Bandit(EnvFamily):
    """Bernoulli bandits with `num_arms` arms; tasks are `[n, num_arms]` float64 arm means.

    `train` and `test` draw from the odd-favouring distribution (independent streams of the seed),
    `ood` from the even-favouring one.
    """

    env_id: ClassVar[str] = "zoo/Bandit-v0"

    num_arms: int = 10
    unfavoured_max: float = 0.5  # the unfavoured arms' means are uniform on [0, unfavoured_max]

    def __post_init__(self) -> None:
        if self.num_arms < 2:
            raise ValueError(f"bandit: num_arms must be at least 2, got {self.num_arms}")
        if not 0.0 <= self.unfavoured_max <= 1.0:
            raise ValueError(f"bandit: unfavoured_max must be in [0, 1], got {self.unfavoured_max}")

    @property
    def num_observations(self) -> int:
        return 1

    @property
    def num_actions(self) -> int:
        return self.num_arms

    @property
    def episode_len(self) -> int:
        return 1

    def sample_tasks(self, split: Split, num_tasks: int, *, seed: int) -> np.ndarray:
        if split not in _SPLIT_STREAM:
            raise ValueError(f"bandit has no split {split!r}; its splits are: train, test, ood")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
        rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
        favoured = np.arange(self.num_arms) % 2 == (0 if split == "ood" else 1)
        scale = np.where(favoured, 1.0, self.unfavoured_max)
        return rng.random((num_tasks, self.num_arms)) * scale

    def make_env(self, task: np.ndarray, **kwargs: Any) -> gym.Env:
        means = self._check_tasks(np.asarray(task)[None])[0]
        return gym.make(self.env_id, means=tuple(means.tolist()), **kwargs)

    def make_vector_env(self, tasks: np.ndarray, *, seed: int | None = None) -> BanditVectorEnv:
        return BanditVectorEnv(tasks=self._check_tasks(tasks), seed=seed)

    def optimal_return(self, tasks: np.ndarray) -> np.ndarray:
        """The best arm's mean (the expected reward of a pull)."""
        return self._check_tasks(tasks).max(axis=1)

    def random_return(self, tasks: np.ndarray) -> np.ndarray:
        """A uniformly random pull's expected reward: the mean of the arm means (about 45% of
        the best arm's on the test split: a fraction of optimal flatters any learner)."""
        return self._check_tasks(tasks).mean(axis=1)

    def _check_tasks(self, tasks: np.ndarray) -> np.ndarray:
        tasks = np.asarray(tasks, dtype=np.float64)
        if tasks.ndim != 2 or tasks.shape[1] != self.num_arms:
            raise ValueError(f"bandit tasks must be a [n, {self.num_arms}] array of arm means")
        if ((tasks < 0) | (tasks > 1)).any():
            raise ValueError("bandit tasks must hold arm means in [0, 1]")
        return tasks


gym.register(id=Bandit.env_id, entry_point="envs.bandit:BanditEnv")
