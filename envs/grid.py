"""What the Dark grid worlds share: cell coding, moves, the expert's step, task splits, and the plain
and vectorised env bases.

A position is `(row, col)`, its observation the cell `row * size + col`. Actions (as in the
corl-team `toymeta` package): 0 noop, 1 up (row - 1), 2 right (col + 1), 3 down (row + 1),
4 left (col - 1); a move into a wall leaves the agent where it is.
"""

from __future__ import annotations

import dataclasses
import functools
from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import DiscreteValue, EnvFamily, Split, draw_tasks
from envs.vector import TaskVectorEnv

NOOP, UP, RIGHT, DOWN, LEFT = range(5)
MOVES = np.array([(0, 0), (-1, 0), (0, 1), (1, 0), (0, -1)])


@dataclasses.dataclass(frozen=True)
class GridFamily(EnvFamily):
    """What every Dark grid family's parameters share: the grid, the episode length, the split."""

    size: int = 9
    episode_len: int = 20  # a field here, a property in the contract
    test_fraction: float = 0.2
    split_seed: int = 0
    lockbox_fraction: float = 0.0
    """A further held-out split, `lockbox`, carved from what would be training tasks (0: none).
    It changes the training split, so it is set before collection (`configs/collect/`)."""
    lockbox_seed: int = 0
    """Which of the would-be training tasks go to the lockbox."""

    def __post_init__(self) -> None:
        if self.size < 2 or self.episode_len < 1:
            raise ValueError(f"{self.name}: size must be >= 2 and episode_len >= 1, got {self}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(
                f"{self.name}: test_fraction must be in (0, 1), got {self.test_fraction}"
            )
        if not 0.0 <= self.lockbox_fraction < 1.0 - self.test_fraction:
            raise ValueError(
                f"{self.name}: lockbox_fraction must be in [0, 1 - test_fraction), "
                f"got {self.lockbox_fraction}"
            )

    @property
    def num_observations(self) -> int:
        return self.size * self.size

    @property
    def observation_factors(self) -> tuple[int, ...]:
        return (self.size, self.size)

    @property
    def num_actions(self) -> int:
        return len(MOVES)

    def all_tasks(self) -> np.ndarray:
        """Every task of the family, `[n, task_dim]`, in a fixed order (the splits partition it)."""
        raise NotImplementedError

    def _pool(self, split: Split) -> np.ndarray:
        return split_tasks(
            self.all_tasks(),
            split,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            family=self.name,
            lockbox_fraction=self.lockbox_fraction,
            lockbox_seed=self.lockbox_seed,
        )

    def sample_tasks(self, split: Split, num_tasks: int, *, seed: int) -> np.ndarray:
        return draw_tasks(self._pool(split), num_tasks, seed=seed)

    def split_size(self, split: Split) -> int | None:
        return len(self._pool(split))

    def transition_table(self) -> np.ndarray:
        return move_table(self.size)


@functools.lru_cache(maxsize=8)
def move_table(size: int) -> np.ndarray:
    """`[size**2, 5]` int64: the cell reached from each cell by each action."""
    rows, cols = np.divmod(np.arange(size * size), size)
    next_rows = np.clip(rows[:, None] + MOVES[:, 0], 0, size - 1)
    next_cols = np.clip(cols[:, None] + MOVES[:, 1], 0, size - 1)
    return next_rows * size + next_cols


@functools.lru_cache(maxsize=8)
def expert_table(size: int) -> np.ndarray:
    """`[size**2, size**2]` int64: a shortest-path action from each cell to each target cell (rows
    first, then columns; noop on the target)."""
    rows, cols = np.divmod(np.arange(size * size), size)
    dr = np.sign(rows[None, :] - rows[:, None]) + 1  # [cell, target]: 0 go up, 2 go down
    dc = np.sign(cols[None, :] - cols[:, None]) + 1
    by_sign = np.array([[UP, UP, UP], [LEFT, NOOP, RIGHT], [DOWN, DOWN, DOWN]])
    return by_sign[dr, dc]


def distance(cells: np.ndarray, targets: np.ndarray, size: int) -> np.ndarray:
    """Manhattan distance between cells (the number of moves between them)."""
    (r0, c0), (r1, c1) = np.divmod(cells, size), np.divmod(targets, size)
    return np.abs(r0 - r1) + np.abs(c0 - c1)


def all_cells(size: int) -> np.ndarray:
    """`[size**2, 2]` int64: every `(row, col)`, in cell order."""
    return np.stack(np.divmod(np.arange(size * size), size), axis=1)


def split_tasks(
    all_tasks: np.ndarray,
    split: Split,
    *,
    test_fraction: float,
    split_seed: int,
    family: str,
    lockbox_fraction: float = 0.0,
    lockbox_seed: int = 0,
) -> np.ndarray:
    """The tasks of `split`: a `split_seed` permutation of all tasks, its first `test_fraction`
    held out as `test`; of the rest, a `lockbox_seed` draw of `lockbox_fraction` of all tasks held
    out as `lockbox` (none by default), the others `train`. The test split does not depend on the
    lockbox. The partition depends on the family's parameters only, never on a sampling seed, so
    held-out tasks never reach training data."""
    splits = ("train", "test", "lockbox") if lockbox_fraction > 0 else ("train", "test")
    if split not in splits:
        hint = (
            " (a lockbox is carved before collection: collect with the env's lockbox_fraction)"
            if split == "lockbox"
            else ""
        )
        raise ValueError(
            f"env {family!r} has no split {split!r}; its splits are: {', '.join(splits)}{hint}"
        )
    order = np.random.default_rng(split_seed).permutation(len(all_tasks))
    num_test = min(max(1, round(test_fraction * len(all_tasks))), len(all_tasks) - 1)
    rest = order[num_test:]
    num_lockbox = 0 if lockbox_fraction <= 0 else max(1, round(lockbox_fraction * len(all_tasks)))
    num_lockbox = min(num_lockbox, len(rest) - 1)
    rest = rest[np.random.default_rng(lockbox_seed).permutation(len(rest))]
    chosen = {
        "test": order[:num_test],
        "lockbox": rest[:num_lockbox],
        "train": rest[num_lockbox:] if num_lockbox else order[num_test:],
    }[split]
    return all_tasks[np.sort(chosen)]


def check_cell(name: str, value: Any, size: int) -> np.ndarray:
    """`value` as a `(row, col)` int64 array inside a `size` grid, or a clear error."""
    cell = np.asarray(value)
    if cell.shape != (2,) or not np.issubdtype(cell.dtype, np.integer):
        raise ValueError(f"{name} must be a (row, col) pair of integers, got {value!r}")
    if not ((cell >= 0) & (cell < size)).all():
        raise ValueError(f"{name}={tuple(cell.tolist())} is outside the {size}x{size} grid")
    return cell.astype(np.int64)


class GridEnv(gym.Env[DiscreteValue, DiscreteValue]):
    """A plain Dark grid world: a position, moves clipped at the walls, a time-less state (the time
    limit is gymnasium's `TimeLimit`, added by `gymnasium.make`).

    `reset(options={"start": (row, col)})` starts an episode at a given position (tests use it to
    replay a vector env's random starts)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}  # type: ignore[misc]  # gymnasium annotates this class-level default per instance

    def __init__(self, *, size: int, random_start: bool, render_mode: str | None = None) -> None:
        if size < 2:
            raise ValueError(f"size must be at least 2, got {size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.size = size
        self.random_start = random_start
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Discrete(size * size)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.pos = np.array([size // 2, size // 2])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "start" in options:
            self.pos = check_cell("start", options["start"], self.size)
        elif self.random_start:
            self.pos = self.np_random.integers(0, self.size, size=2)
        else:
            self.pos = np.array([self.size // 2, self.size // 2])
        return self._obs(), {}

    def _move(self, action: DiscreteValue) -> None:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}; actions are 0..{len(MOVES) - 1}")
        self.pos = np.clip(self.pos + MOVES[action], 0, self.size - 1)

    def _obs(self) -> int:
        return int(self.pos[0] * self.size + self.pos[1])

    def _grid(self) -> np.ndarray:
        grid = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        grid[self.pos[0], self.pos[1]] = (0, 255, 0)
        return grid


class GridVectorEnv(TaskVectorEnv):
    """The vectorised grid world: cells `[num_envs]` moved by one table lookup per step.

    Subclasses give the reward and termination of arriving in a cell and reset their own state."""

    def __init__(
        self,
        *,
        tasks: np.ndarray,
        size: int,
        episode_len: int,
        random_start: bool,
        seed: int | None = None,
    ) -> None:
        super().__init__(tasks=tasks, num_observations=size * size, num_actions=5, seed=seed)
        self.size, self.episode_len, self.random_start = size, episode_len, random_start
        self._moves = move_table(size)
        self._expert = expert_table(size)
        self._cell = np.zeros(self.num_envs, dtype=np.int64)
        self._time = np.zeros(self.num_envs, dtype=np.int64)
        # random starts, per sub-env and episode (`_starts`); made afresh at every reset
        self._start_table = np.zeros((self.num_envs, 0), dtype=np.int64)
        self._start_offset = 0  # the episode of the table's first column
        self._episodes = np.zeros(self.num_envs, dtype=np.int64)  # episodes started, per sub-env

    _START_BLOCK: ClassVar[int] = 64
    """Random starts drawn at a time for every sub-env (its next 64 episodes)."""

    def _starts(self, rows: np.ndarray) -> np.ndarray:
        """The start cells of the next episodes of sub-envs `rows` (indices).

        Random starts come from a table, a row per sub-env and a column per episode, drawn a
        block of episodes at a time for every sub-env: a sub-env's k-th start does not depend on
        when the others' episodes end, so a task plays the same whatever shares the vector env
        with it and however the others play (the evaluation retires finished tasks on that)."""
        if not self.random_start:
            return np.full(len(rows), (self.size // 2) * self.size + self.size // 2)
        episode = self._episodes[rows]
        while len(rows) and episode.max() >= self._start_offset + self._start_table.shape[1]:
            used = self._episodes.min() - self._start_offset  # columns no sub-env needs again
            block = self.np_random.integers(
                0, self.size * self.size, size=(self.num_envs, self._START_BLOCK)
            )
            self._start_table = np.concatenate([self._start_table[:, used:], block], axis=1)
            self._start_offset += used
        self._episodes[rows] += 1
        return self._start_table[rows, episode - self._start_offset]

    def _reset_all(self) -> np.ndarray:
        self._start_table = np.zeros((self.num_envs, 0), dtype=np.int64)
        self._start_offset = 0
        self._episodes = np.zeros(self.num_envs, dtype=np.int64)
        self._cell = self._starts(np.arange(self.num_envs))
        self._time = np.zeros(self.num_envs, dtype=np.int64)
        self._reset_extra(np.ones(self.num_envs, dtype=bool))
        return self._cell

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        self._cell = cell = self._moves[self._cell, actions]
        rewards, terminated = self._arrive(cell)
        self._time += 1
        return cell, rewards, terminated, self._time >= self.episode_len

    def _autoreset(self, done: np.ndarray, final_obs: np.ndarray) -> np.ndarray:
        self._cell = cell = final_obs.copy()
        cell[done] = self._starts(np.flatnonzero(done))
        self._time[done] = 0
        self._reset_extra(done)
        return cell.copy()

    @abstractmethod
    def _arrive(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rewards (float32) and terminations of arriving in `cell`; updates the subclass's state."""

    @abstractmethod
    def _reset_extra(self, done: np.ndarray) -> None:
        """Reset the subclass's own state where `done`."""
