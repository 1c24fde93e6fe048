"""Dark Room and Dark Room Hard: find a hidden goal cell, starting at the centre, seeing only your cell.

Dark Room (9x9) pays +1 on every step spent on the goal for 20 steps; Dark Room Hard (17x17) pays +1
once, on reaching the goal, and the episode ends there. A task is the goal `(row, col)`. Dynamics
match the corl-team `toymeta` package (`Dark-Room-9x9-v0`, `Dark-Room-Hard-17x17-v0`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import DiscreteValue, Split, draw_task, register_env
from envs.grid import (
    GridEnv,
    GridFamily,
    GridVectorEnv,
    all_cells,
    check_cell,
    distance,
)


class DarkRoomEnv(GridEnv):
    """One Dark Room task: `gymnasium.make("zoo/DarkRoom-v0", goal=(row, col))`. Without a goal,
    every `reset(seed=...)` draws one from the family's `split` (`info["task"]` says which)."""

    def __init__(
        self,
        *,
        goal: tuple[int, int] | None = None,
        size: int = 9,
        terminate_on_goal: bool = False,
        split: Split = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(size=size, random_start=False, render_mode=render_mode)
        self.terminate_on_goal = terminate_on_goal
        family = DarkRoomHard if terminate_on_goal else DarkRoom
        self._tasks = None if goal is not None else (family(size=size), split)
        if self._tasks is not None:
            self._tasks[0].split_size(split)  # a clear error for a split the family lacks
        self.goal = check_cell("goal", goal, size) if goal is not None else self.pos.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        if self._tasks is not None:
            self.goal = draw_task(*self._tasks, self.np_random)
        return obs, {**info, "task": self.goal.copy()}

    def step(self, action: DiscreteValue) -> tuple[int, float, bool, bool, dict[str, Any]]:
        self._move(action)
        reward = float(np.array_equal(self.pos, self.goal))
        return self._obs(), reward, bool(reward and self.terminate_on_goal), False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        grid = self._grid()
        grid[self.goal[0], self.goal[1]] = (255, 0, 0)
        return grid


class DarkRoomVectorEnv(GridVectorEnv):
    """Many Dark Room tasks at once; `tasks` is `[num_envs, 2]` goal `(row, col)`."""

    def __init__(
        self,
        *,
        tasks: np.ndarray,
        size: int = 9,
        episode_len: int = 20,
        terminate_on_goal: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            tasks=tasks, size=size, episode_len=episode_len, random_start=False, seed=seed
        )
        self.terminate_on_goal = terminate_on_goal
        self._goal = tasks[:, 0] * size + tasks[:, 1]

    def expert_actions(self) -> np.ndarray:
        """A shortest-path action to the goal (noop on it)."""
        return self._expert[self._cell, self._goal]

    def _arrive(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        on_goal = cell == self._goal
        terminated = on_goal if self.terminate_on_goal else np.zeros(self.num_envs, dtype=bool)
        return on_goal.astype(np.float32), terminated

    def _reset_extra(self, done: np.ndarray) -> None:
        pass


@register_env("darkroom")
@dataclasses.dataclass(frozen=True)
class DarkRoom(GridFamily):
    """Dark Room: a `size` x `size` grid, goal hidden, start at the centre, +1 per step on the goal.

    Tasks are `[n, 2]` goal `(row, col)`; `test_fraction` of all goals (chosen by `split_seed`) are
    held out as the `test` split.
    """

    env_id: ClassVar[str] = "zoo/DarkRoom-v0"
    terminate_on_goal: ClassVar[bool] = False

    def all_tasks(self) -> np.ndarray:
        """Every goal cell, `[size**2, 2]`."""
        return all_cells(self.size)

    def make_env(self, task: np.ndarray, **kwargs: Any) -> gym.Env:
        goal = tuple(int(v) for v in check_cell("goal", task, self.size))
        return gym.make(
            self.env_id, goal=goal, size=self.size, max_episode_steps=self.episode_len, **kwargs
        )

    def make_vector_env(self, tasks: np.ndarray, *, seed: int | None = None) -> DarkRoomVectorEnv:
        return DarkRoomVectorEnv(
            tasks=self._check_tasks(tasks),
            size=self.size,
            episode_len=self.episode_len,
            terminate_on_goal=self.terminate_on_goal,
            seed=seed,
        )

    def optimal_return(self, tasks: np.ndarray) -> np.ndarray:
        tasks = self._check_tasks(tasks)
        centre = np.full(len(tasks), (self.size // 2) * self.size + self.size // 2)
        # The goal is reached on step max(d, 1) (a noop "reaches" a goal at the centre).
        arrival = np.maximum(distance(centre, tasks[:, 0] * self.size + tasks[:, 1], self.size), 1)
        if self.terminate_on_goal:
            return (arrival <= self.episode_len).astype(np.float64)
        return np.maximum(self.episode_len - arrival + 1, 0).astype(np.float64)

    def _check_tasks(self, tasks: np.ndarray) -> np.ndarray:
        tasks = np.asarray(tasks)
        if tasks.ndim != 2 or tasks.shape[1] != 2 or not np.issubdtype(tasks.dtype, np.integer):
            raise ValueError(
                f"{self.name} tasks must be an integer [n, 2] array of goal (row, col)"
            )
        if ((tasks < 0) | (tasks >= self.size)).any():
            raise ValueError(
                f"{self.name} tasks hold goals outside the {self.size}x{self.size} grid"
            )
        return tasks.astype(np.int64)


@register_env("darkroom_hard")
@dataclasses.dataclass(frozen=True)
class DarkRoomHard(DarkRoom):
    """Dark Room Hard: 17x17, +1 on reaching the goal and the episode ends there (return <= 1)."""

    env_id: ClassVar[str] = "zoo/DarkRoomHard-v0"
    terminate_on_goal: ClassVar[bool] = True

    size: int = 17


gym.register(
    id=DarkRoom.env_id,
    entry_point="envs.dark_room:DarkRoomEnv",
    max_episode_steps=20,
    kwargs={"size": 9, "terminate_on_goal": False},
)
gym.register(
    id=DarkRoomHard.env_id,
    entry_point="envs.dark_room:DarkRoomEnv",
    max_episode_steps=20,
    kwargs={"size": 17, "terminate_on_goal": True},
)
