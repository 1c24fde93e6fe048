"""Dark Key-To-Door: find a hidden key, then a hidden door, from a random start, seeing only your cell.

+1 the first time the agent stands on the key, then +1 on the door (only once it holds the key),
where the episode ends; 50 steps at most. A task is `(key_row, key_col, door_row, door_col)`, key
and door on different cells. Dynamics match the corl-team `toymeta` package's
`Dark-Key-To-Door-9x9-v0`.
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


class KeyToDoorEnv(GridEnv):
    """One task: `gymnasium.make("zoo/DarkKeyToDoor-v0", key=(row, col), door=(row, col))`.
    Without them, every `reset(seed=...)` draws a (key, door) task from the family's `split`
    (`info["task"]` says which).

    `info["has_key"]` tells whether the key was picked up in this episode."""

    def __init__(
        self,
        *,
        key: tuple[int, int] | None = None,
        door: tuple[int, int] | None = None,
        size: int = 9,
        split: Split = "train",
        render_mode: str | None = None,
    ) -> None:
        super().__init__(size=size, random_start=True, render_mode=render_mode)
        if (key is None) != (door is None):
            raise ValueError(
                "Dark Key-To-Door takes both key=(row, col) and door=(row, col), or neither"
            )
        self._tasks = None if key is not None else (KeyToDoor(size=size), split)
        if self._tasks is not None:
            self._tasks[0].split_size(split)  # a clear error for a split the family lacks
            key, door = (0, 0), (0, 1)  # replaced at every reset
        self.key = check_cell("key", key, size)
        self.door = check_cell("door", door, size)
        self.has_key = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        if self._tasks is not None:
            super().reset(seed=seed)  # seeds np_random before the task is drawn from it
            task = draw_task(*self._tasks, self.np_random)
            self.key, self.door = task[:2].copy(), task[2:].copy()
            seed = None
        obs, _ = super().reset(seed=seed, options=options)
        self.has_key = False
        return obs, {"has_key": False, "task": np.concatenate([self.key, self.door])}

    def step(self, action: DiscreteValue) -> tuple[int, float, bool, bool, dict[str, Any]]:
        self._move(action)
        key_reward = float(np.array_equal(self.pos, self.key) and not self.has_key)
        self.has_key = self.has_key or bool(key_reward)
        door_reward = float(np.array_equal(self.pos, self.door) and self.has_key)
        info = {"has_key": self.has_key}
        return self._obs(), key_reward + door_reward, bool(door_reward), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        grid = self._grid()
        grid[self.key[0], self.key[1]] = (255, 255, 0)
        grid[self.door[0], self.door[1]] = (128, 64, 48)
        return grid


class KeyToDoorVectorEnv(GridVectorEnv):
    """Many Key-To-Door tasks at once; `tasks` is `[num_envs, 4]` (key row, col, door row, col)."""

    def __init__(
        self,
        *,
        tasks: np.ndarray,
        size: int = 9,
        episode_len: int = 50,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            tasks=tasks, size=size, episode_len=episode_len, random_start=True, seed=seed
        )
        self._key = tasks[:, 0] * size + tasks[:, 1]
        self._door = tasks[:, 2] * size + tasks[:, 3]
        self._has_key = np.zeros(self.num_envs, dtype=bool)

    def expert_actions(self) -> np.ndarray:
        """A shortest-path action to the key, or to the door once the key is held."""
        return self._expert[self._cell, np.where(self._has_key, self._door, self._key)]

    def _arrive(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key_reward = (cell == self._key) & ~self._has_key
        self._has_key = self._has_key | key_reward
        at_door = (cell == self._door) & self._has_key
        return key_reward.astype(np.float32) + at_door, at_door

    def _reset_extra(self, done: np.ndarray) -> None:
        self._has_key[done] = False


@register_env("key_to_door")
@dataclasses.dataclass(frozen=True)
class KeyToDoor(GridFamily):
    """Dark Key-To-Door on a `size` x `size` grid; episodes of `episode_len` steps.

    Tasks are `[n, 4]` (key row, key col, door row, door col); `test_fraction` of all (key, door)
    pairs (chosen by `split_seed`) are held out as the `test` split.
    """

    env_id: ClassVar[str] = "zoo/DarkKeyToDoor-v0"
    reward_marks_progress: ClassVar[bool] = True

    episode_len: int = 50

    def all_tasks(self) -> np.ndarray:
        """Every (key, door) pair with the key and the door on different cells, `[n, 4]`."""
        cells = all_cells(self.size)
        key, door = np.divmod(np.arange(len(cells) ** 2), len(cells))
        different = key != door
        return np.concatenate([cells[key[different]], cells[door[different]]], axis=1)

    def make_env(self, task: np.ndarray, **kwargs: Any) -> gym.Env:
        task = self._check_tasks(np.asarray(task)[None])[0]
        return gym.make(
            self.env_id,
            key=(int(task[0]), int(task[1])),
            door=(int(task[2]), int(task[3])),
            size=self.size,
            max_episode_steps=self.episode_len,
            **kwargs,
        )

    def make_vector_env(self, tasks: np.ndarray, *, seed: int | None = None) -> KeyToDoorVectorEnv:
        return KeyToDoorVectorEnv(
            tasks=self._check_tasks(tasks), size=self.size, episode_len=self.episode_len, seed=seed
        )

    def optimal_return(self, tasks: np.ndarray) -> np.ndarray:
        """Expected over the uniform random start: 2 where key then door fit in an episode."""
        tasks = self._check_tasks(tasks)
        size, cells = self.size, np.arange(self.size * self.size)
        key = tasks[:, 0] * size + tasks[:, 1]
        door = tasks[:, 2] * size + tasks[:, 3]
        # From start s the key is reached on step max(d(s, key), 1) (a noop on it counts).
        key_step = np.maximum(distance(cells[None, :], key[:, None], size), 1)
        door_step = key_step + distance(key, door, size)[:, None]
        got = (key_step <= self.episode_len).astype(np.float64) + (door_step <= self.episode_len)
        return got.mean(axis=1)

    def _check_tasks(self, tasks: np.ndarray) -> np.ndarray:
        tasks = np.asarray(tasks)
        if tasks.ndim != 2 or tasks.shape[1] != 4 or not np.issubdtype(tasks.dtype, np.integer):
            raise ValueError(
                f"{self.name} tasks must be an integer [n, 4] array of (key row, key col, "
                "door row, door col)"
            )
        if ((tasks < 0) | (tasks >= self.size)).any():
            raise ValueError(
                f"{self.name} tasks hold cells outside the {self.size}x{self.size} grid"
            )
        return tasks.astype(np.int64)


gym.register(
    id=KeyToDoor.env_id,
    entry_point="envs.key_to_door:KeyToDoorEnv",
    max_episode_steps=50,
    kwargs={"size": 9},
)
