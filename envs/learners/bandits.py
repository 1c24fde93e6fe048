"""Bandit learners, vectorised over sub-envs: UCB1, Thompson sampling (Beta-Bernoulli), epsilon-greedy.

They keep per-arm pull counts and reward sums `[num_envs, num_arms]` and ignore the (dummy)
observation; every step is one pull and one episode.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Generic, TypeVar

import numpy as np

from envs.base import EnvFamily, Learner
from envs.learners.registry import register_learner
from envs.learners.schedules import check_epsilon, linear_epsilon

ParamsT = TypeVar("ParamsT")


class BanditLearner(Learner, Generic[ParamsT]):
    """Counts and sums of each sub-env's arms; subclasses choose the arm from them.

    Generic over its hyper-parameters, an instance of the subclass's `Params` dataclass."""

    Params: ClassVar[type]

    def __init__(self, *, num_envs: int, family: EnvFamily, seed: int, params: ParamsT) -> None:
        if family.num_observations != 1 or family.episode_len != 1:
            raise ValueError(
                f"{self.name} is a bandit learner: env {family.name!r} has "
                f"{family.num_observations} observations and {family.episode_len}-step episodes"
            )
        self.params = params
        self.num_envs, self.num_arms = num_envs, family.num_actions
        self.counts = np.zeros((num_envs, self.num_arms), dtype=np.float64)
        self.sums = np.zeros((num_envs, self.num_arms), dtype=np.float64)
        self._rows = np.arange(num_envs)
        self.rng = np.random.default_rng(seed)

    def update(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        self.counts[self._rows, actions] += 1
        self.sums[self._rows, actions] += rewards

    def _random_argmax(self, values: np.ndarray) -> np.ndarray:
        """Row-wise argmax, ties broken uniformly at random."""
        is_best = values == values.max(axis=1, keepdims=True)
        return np.argmax(is_best + self.rng.random(values.shape) * 0.5, axis=1)


@dataclasses.dataclass(frozen=True)
class UCB1Params:
    """Hyper-parameters of UCB1."""

    exploration: float = 1.0
    """Scale of the bonus `sqrt(2 ln t / n)` (1: the classic UCB1)."""

    def __post_init__(self) -> None:
        if self.exploration < 0:
            raise ValueError(f"ucb1: exploration must be >= 0, got {self.exploration}")


@register_learner("ucb1")
class UCB1(BanditLearner[UCB1Params]):
    """UCB1 (Auer et al. 2002): pull every arm once, then the highest mean plus confidence bonus."""

    Params: ClassVar[type[UCB1Params]] = UCB1Params

    def act(self, obs: np.ndarray) -> np.ndarray:
        pulls = np.maximum(self.counts, 1)
        log_t = np.log(np.maximum(self.counts.sum(axis=1, keepdims=True), 1))
        score = self.sums / pulls + self.params.exploration * np.sqrt(2 * log_t / pulls)
        return self._random_argmax(np.where(self.counts == 0, np.inf, score))


@dataclasses.dataclass(frozen=True)
class ThompsonParams:
    """Hyper-parameters of Beta-Bernoulli Thompson sampling."""

    prior_alpha: float = 1.0
    """Beta prior's alpha (prior successes + 1)."""
    prior_beta: float = 1.0
    """Beta prior's beta (prior failures + 1)."""

    def __post_init__(self) -> None:
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ValueError(f"thompson: the Beta prior needs alpha, beta > 0, got {self}")


@register_learner("thompson")
class Thompson(BanditLearner[ThompsonParams]):
    """Thompson sampling: pull the arm whose mean, drawn from its Beta posterior, is highest."""

    Params: ClassVar[type[ThompsonParams]] = ThompsonParams

    def act(self, obs: np.ndarray) -> np.ndarray:
        alpha = self.params.prior_alpha + self.sums
        beta = self.params.prior_beta + self.counts - self.sums
        return np.argmax(self.rng.beta(alpha, beta), axis=1)


@dataclasses.dataclass(frozen=True)
class EpsilonGreedyParams:
    """Hyper-parameters of epsilon-greedy on the empirical means."""

    eps_start: float = 1.0
    """Epsilon of the first pull (1: uniformly random)."""
    eps_end: float = 0.02
    """Epsilon once decayed."""
    eps_decay_episodes: int = 100
    """Pulls over which epsilon decays linearly from `eps_start` to `eps_end`."""

    def __post_init__(self) -> None:
        check_epsilon(
            "epsilon_greedy",
            start=self.eps_start,
            end=self.eps_end,
            decay_episodes=self.eps_decay_episodes,
        )


@register_learner("epsilon_greedy")
class EpsilonGreedy(BanditLearner[EpsilonGreedyParams]):
    """Epsilon-greedy on empirical means (untried arms count as 1, so each is tried once when
    greedy), with a linearly decaying epsilon."""

    Params: ClassVar[type[EpsilonGreedyParams]] = EpsilonGreedyParams

    def act(self, obs: np.ndarray) -> np.ndarray:
        means = np.where(self.counts == 0, 1.0, self.sums / np.maximum(self.counts, 1))
        epsilon = linear_epsilon(
            self.counts.sum(axis=1),
            start=self.params.eps_start,
            end=self.params.eps_end,
            decay_episodes=self.params.eps_decay_episodes,
        )
        explore = self.rng.random(self.num_envs) < epsilon
        random_arm = self.rng.integers(0, self.num_arms, self.num_envs)
        return np.where(explore, random_arm, self._random_argmax(means))
