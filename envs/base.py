"""Contracts of the task families, the source learners and the histories they record.

- `EnvFamily`: one per task family (Dark Room, ...). Knows its task distribution and splits, builds a
  plain registered `gymnasium.Env` for one task and a NumPy-vectorised `gymnasium.vector.VectorEnv`
  for many tasks (same semantics), and the optimal return of each task.
- `Learner`: a vectorised source RL algorithm, one independent learner per sub-env.
- `Histories`: what a collection produces, flat arrays of many learning histories; the dataset
  format (`datamodules.storage`) stores exactly these arrays.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import gymnasium as gym
import numpy as np

Split = Literal["train", "val", "test", "lockbox", "ood"]
"""`train`: tasks for training data; `val`: the validation tasks of one training run, training
tasks whose histories the run held out (recorded in the model by its datamodule, not a split of the
family: model selection reads them, never `test`); `test`: held-out tasks of the same distribution
(never in training data, played once by the chosen model); `lockbox`: a second such split that
nothing is decided on, played once by a study's final checkpoints (families that carve one before
collection: the grid worlds' `lockbox_fraction`); `ood`: out-of-distribution tasks, for
families that define them (bandit)."""

DiscreteValue: TypeAlias = int | np.int64
"""An element of a `gymnasium.spaces.Discrete` space, the observations and actions of the plain
envs: they return Python ints and take ints or the np.int64 that `Discrete.sample` gives
(gymnasium types a Discrete space's elements as np.int64 only)."""


def draw_tasks(pool: np.ndarray, num_tasks: int, *, seed: int) -> np.ndarray:
    """`num_tasks` rows of `pool` (any task array): seeded shuffles of the whole pool, one after another, so each task
    appears equally often (within one) whatever `num_tasks` is."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
    rng = np.random.default_rng(seed)
    rounds = math.ceil(num_tasks / len(pool))
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(rounds)])[:num_tasks]
    return pool[order]


def draw_task(family: EnvFamily, split: Split, rng: np.random.Generator) -> np.ndarray:
    """One task of `family`'s `split`, drawn with `rng` (a plain env's `np_random`): what a
    registered env made without its task plays after `reset(seed=...)`."""
    return family.sample_tasks(split, 1, seed=int(rng.integers(2**31)))[0]


class EnvFamily(ABC):
    """A task family: its parameters are dataclass fields, its tasks are arrays `[n, k]` (int64
    cells for the grid worlds, float64 arm means for bandits).

    Subclasses are `@dataclasses.dataclass(frozen=True)` with defaults for every field, so
    `make_family(name, **params)` rebuilds the family recorded in a dataset's manifest.
    """

    name: ClassVar[str] = ""  # set by @register_env
    env_id: ClassVar[str] = ""  # gymnasium id, e.g. "zoo/DarkRoom-v0"
    # True where a reward marks progress the observation does not show (key_to_door: the key is
    # picked up): a learner may add "rewarded already this episode" to the state it learns on.
    reward_marks_progress: ClassVar[bool] = False

    @property
    @abstractmethod
    def num_observations(self) -> int:
        """Size of the Discrete observation space."""

    @property
    def observation_factors(self) -> tuple[int, ...]:
        """What an observation index is made of: its digits in this mixed radix (most significant
        first; the product is `num_observations`). The Dark grid worlds give `(size, size)`: the
        agent observes its (row, col) coordinates, as in the AD paper, coded `row * size + col`.
        The default is one opaque symbol."""
        return (self.num_observations,)

    @property
    @abstractmethod
    def num_actions(self) -> int:
        """Size of the Discrete action space."""

    @property
    @abstractmethod
    def episode_len(self) -> int:
        """Maximum steps of an episode (time limit)."""

    @abstractmethod
    def sample_tasks(self, split: Split, num_tasks: int, *, seed: int) -> np.ndarray:
        """`num_tasks` tasks of `split` as an array `[num_tasks, task_dim]`, deterministic in
        `seed`. The train and test splits are disjoint for every seed."""

    def split_size(self, split: Split) -> int | None:
        """How many distinct tasks `split` has (`sample_tasks` of that many draws each once), or
        None where tasks are drawn from a continuous distribution (bandit arm means)."""
        return None

    @abstractmethod
    def make_env(self, task: np.ndarray, **kwargs: Any) -> gym.Env:
        """The plain gymnasium env of one task (also reachable through `gymnasium.make`)."""

    @abstractmethod
    def make_vector_env(
        self, tasks: np.ndarray, *, seed: int | None = None
    ) -> gym.vector.VectorEnv:
        """One sub-env per task, stepped together with NumPy (no Python loop over sub-envs)."""

    @abstractmethod
    def optimal_return(self, tasks: np.ndarray) -> np.ndarray:
        """Best achievable episode return of each task, `[n]` float64."""

    def random_return(self, tasks: np.ndarray) -> np.ndarray | None:
        """Expected episode return of each task under uniformly random actions, `[n]` float64,
        where it is known in closed form (the bandit: the mean of its arms); None where it is not.
        A score above random play, `(r - random) / (optimal - random)`, is reported with it."""
        return None

    def transition_table(self) -> np.ndarray | None:
        """`[num_observations, num_actions]` int64: the observation each action leads to from each
        observation, where that is deterministic and the same in every task (the Dark grids: the
        moves, walls included), so a learner may be told the dynamics and left to find the rewards;
        None (the default) where it is not."""
        return None

    def params(self) -> dict[str, Any]:
        """The family's parameters, JSON-serialisable (for a dataset's manifest)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # families are dataclasses; the ABC is not


EnvFamilyT = TypeVar("EnvFamilyT", bound=type[EnvFamily])

ENV_FAMILIES: dict[str, type[EnvFamily]] = {}


def register_env(name: str) -> Callable[[EnvFamilyT], EnvFamilyT]:
    """Class decorator: make an `EnvFamily` available by name (a name taken by another class is
    refused)."""

    def decorator(cls: EnvFamilyT) -> EnvFamilyT:
        if name in ENV_FAMILIES and ENV_FAMILIES[name] is not cls:
            raise ValueError(f"env {name!r} is already registered by {ENV_FAMILIES[name]}")
        cls.name = name
        ENV_FAMILIES[name] = cls
        return cls

    return decorator


def make_family(name: str, **params: Any) -> EnvFamily:
    """Build a registered family by name, with a clear error for unknown names or parameters."""
    if name not in ENV_FAMILIES:
        raise ValueError(f"unknown env {name!r}; known: {', '.join(sorted(ENV_FAMILIES))}")
    cls = ENV_FAMILIES[name]
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # families are dataclasses; the ABC is not
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for env {name!r}; it takes: {sorted(fields)}"
        )
    return cls(**params)


class Learner(ABC):
    """A vectorised source RL learner: `num_envs` independent learners, one per sub-env.

    The collection loop calls `act` then `update` once per vector step. `update` sees the true last
    observation of an episode as `next_obs` (not the reset observation of the next episode).
    """

    name: ClassVar[str] = ""  # set by @register_learner

    @abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions `[num_envs]` for observations `[num_envs]`."""

    @abstractmethod
    def update(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Learn from one transition per sub-env."""


@dataclasses.dataclass
class Histories:
    """Many learning histories as flat arrays of transitions, history after history.

    History `h` is `slice(offsets[h], offsets[h + 1])` of every per-step array. Within a history,
    steps are in time order across all its (kept) episodes; `episode[i]` numbers the episode of step
    `i` in the learner's full history (so subsampling shows as gaps), and `done[i]` marks the last
    step of an episode (terminated or truncated).
    """

    observations: np.ndarray  # [N] int32: o_t
    actions: np.ndarray  # [N] int32: a_t
    rewards: np.ndarray  # [N] float32: r_t, the reward of taking a_t in o_t
    done: np.ndarray  # [N] bool: a_t ended the episode
    episode: np.ndarray  # [N] int32: episode index of step i in its history
    offsets: np.ndarray  # [H + 1] int64
    task_index: np.ndarray  # [H] int64: row of the dataset's task table
    learning_curve: (
        np.ndarray
    )  # [H, E] float32: return of every episode of the learner, kept or not

    PER_STEP: ClassVar[tuple[str, ...]] = ("observations", "actions", "rewards", "done", "episode")
    PER_HISTORY: ClassVar[tuple[str, ...]] = ("offsets", "task_index", "learning_curve")

    @property
    def num_histories(self) -> int:
        return len(self.task_index)

    @property
    def num_steps(self) -> int:
        return len(self.observations)
