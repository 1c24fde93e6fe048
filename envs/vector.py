"""The base of the NumPy-vectorised task envs: one sub-env per task, same-step autoreset.

Every family's vector env steps all sub-envs with a handful of NumPy calls (no Python loop over
sub-envs). A step that ends an episode returns the next episode's first observation and puts the
true last observation in `infos["final_obs"]` (dense, with the mask `infos["_final_obs"]`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


class TaskVectorEnv(gym.vector.VectorEnv, ABC):
    """A vector env of `len(tasks)` sub-envs, sub-env `i` playing task `tasks[i]`.

    Observations are int64 `[num_envs]`, rewards float32, terminations / truncations bool; the
    arrays a step returns are fresh (safe to keep).
    """

    single_observation_space: gym.spaces.Discrete
    single_action_space: gym.spaces.Discrete
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # type: ignore[misc]  # gymnasium annotates this class-level default per instance

    def __init__(
        self,
        *,
        tasks: np.ndarray,
        num_observations: int,
        num_actions: int,
        seed: int | None = None,
    ) -> None:
        if tasks.ndim != 2 or len(tasks) == 0:
            raise ValueError(
                f"tasks must be a non-empty [num_tasks, task_dim] array, got {tasks.shape}"
            )
        self.tasks = tasks
        self.num_envs = len(tasks)
        self.single_observation_space = gym.spaces.Discrete(num_observations)
        self.single_action_space = gym.spaces.Discrete(num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._seed = seed

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode in every sub-env; `seed` (else the constructor's) seeds `np_random`."""
        seed = self._seed if seed is None and self._np_random is None else seed
        super().reset(seed=seed, options=options)
        return self._reset_all().copy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        num_actions = self.single_action_space.n
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"expected {self.num_envs} integer actions, got {actions.dtype}{actions.shape}"
            )
        if actions.min() < 0 or actions.max() >= num_actions:
            raise ValueError(
                f"actions must be in [0, {num_actions}), got {actions.min()}..{actions.max()}"
            )
        final_obs, rewards, terminated, truncated = self._step(actions)
        done = terminated | truncated
        obs = self._autoreset(done, final_obs) if done.any() else final_obs.copy()
        return obs, rewards, terminated, truncated, {"final_obs": final_obs, "_final_obs": done}

    @abstractmethod
    def expert_actions(self) -> np.ndarray:
        """The optimal action `[num_envs]` of every sub-env in its current state (for Expert
        Distillation data and as the upper baseline of evaluations)."""

    @abstractmethod
    def _reset_all(self) -> np.ndarray:
        """Reset every sub-env's state; return the observations (the env's own state array)."""

    @abstractmethod
    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Advance every sub-env: `(obs, rewards, terminated, truncated)`, without autoreset."""

    @abstractmethod
    def _autoreset(self, done: np.ndarray, final_obs: np.ndarray) -> np.ndarray:
        """Reset the sub-envs where `done`; return the observations of all sub-envs."""
