"""Tabular Q-learning, one Q-table per sub-env, all tables in one `[num_envs, states, actions]` array.

Exploration is epsilon-greedy with a linearly decaying epsilon, greedy ties broken at random, and
optimistic initial values by default: measured here, zero-initialised values with ties broken by
index and a fixed epsilon of 0.1 never find the Dark Room goal (the agent keeps choosing noop).
`backward_replay` re-applies each finished episode's updates last step first (episodic backward
update): with lr 1 on a deterministic grid a found goal's value reaches the start in one episode.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import numpy as np

from envs.base import EnvFamily, Learner
from envs.learners.registry import register_learner
from envs.learners.schedules import check_epsilon, linear_epsilon


@dataclasses.dataclass(frozen=True)
class QLearningParams:
    """Hyper-parameters of tabular Q-learning."""

    lr: float = 0.3
    """Step size of the update toward the one-step target."""
    gamma: float = 0.9
    """Discount; the target bootstraps through truncations (time limits), not terminations."""
    eps_start: float = 1.0
    """Epsilon of the first episode (1: uniformly random actions)."""
    eps_end: float = 0.01
    """Epsilon once decayed."""
    eps_decay_episodes: int = 60
    """Episodes over which epsilon decays linearly from `eps_start` to `eps_end`."""
    init_value: float = 1.0
    """Initial Q-value of every state and action (> 0 is optimistic: untried actions look good)."""
    random_ties: bool = True
    """Break ties between greedy actions at random (False: the lowest index, i.e. noop first)."""
    backward_replay: bool = False
    """At the end of every episode, update its transitions again from the last to the first, so a
    reward propagates back along the whole path at once (learning spans ~10-20 Dark Room episodes
    instead of ~100: the improvement fits in an AD context)."""
    replay_sweeps: int = 0
    """At the end of every episode, this many sweeps of updates over every (state, action) tried so
    far, toward its last seen reward and next state (Dyna-Q planning on the model the agent has
    seen; exact on deterministic grids): a found goal's value spreads over every explored cell, so
    the greedy path is the shortest one through them. 0: off."""
    known_moves: bool = False
    """Tell the learner where each action leads (the family's `transition_table`: the grid's moves)
    but not what it pays: arriving in a cell reveals the outcome (reward, end of episode, next
    state) of every (state, action) that leads there, not only of the one taken, so the planning
    sweeps see it and the optimism of untried actions draws the agent to unvisited cells rather
    than to every untried action of every visited one (an optimistic planner, R-max-like, on a
    known grid). Needs `replay_sweeps`."""
    progress_state: bool | None = None
    """Add "rewarded already this episode" (key picked) to the state; None: where the family's
    rewards mark progress (`EnvFamily.reward_marks_progress`)."""

    def __post_init__(self) -> None:
        if not (0.0 < self.lr <= 1.0 and 0.0 <= self.gamma < 1.0):
            raise ValueError(f"q_learning: need 0 < lr <= 1 and 0 <= gamma < 1, got {self}")
        if self.replay_sweeps < 0:
            raise ValueError(f"q_learning: replay_sweeps must be >= 0, got {self.replay_sweeps}")
        if self.known_moves and not self.replay_sweeps:
            raise ValueError("q_learning: known_moves needs replay_sweeps > 0 (its planning)")
        check_epsilon(
            "q_learning",
            start=self.eps_start,
            end=self.eps_end,
            decay_episodes=self.eps_decay_episodes,
        )


class Transitions(NamedTuple):
    """One transition per entry: Q-table rows (env and state) before and after, action, reward."""

    row: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_row: np.ndarray
    terminated: np.ndarray


@register_learner("q_learning")
class QLearning(Learner):
    """Epsilon-greedy tabular Q-learning on (observation, progress) states, vectorised over sub-envs.

    Epsilon decays per finished episode of each sub-env; the state adds a progress bit that turns on
    with the first positive reward of an episode when `progress_state` is on.
    """

    Params: ClassVar[type[QLearningParams]] = QLearningParams

    def __init__(
        self, *, num_envs: int, family: EnvFamily, seed: int, params: QLearningParams
    ) -> None:
        self.params = params
        self.num_envs = num_envs
        self.num_obs, self.num_actions = family.num_observations, family.num_actions
        self.track_progress = (
            family.reward_marks_progress if params.progress_state is None else params.progress_state
        )
        num_states = self.num_obs * (2 if self.track_progress else 1)
        self.q = np.full((num_envs, num_states, self.num_actions), params.init_value, np.float32)
        self._q_rows = self.q.reshape(-1, self.num_actions)  # row `env * num_states + state`
        self._q_flat = self.q.reshape(-1)
        self._row_base = np.arange(num_envs) * num_states
        self.progress = np.zeros(num_envs, dtype=bool)
        self.episodes = np.zeros(num_envs, dtype=np.int64)
        self.epsilon = self._epsilon()
        self.rng = np.random.default_rng(seed)
        if params.backward_replay:  # this episode's transitions, `[num_envs, episode_len]` each
            shape = (num_envs, family.episode_len)
            self._episode = Transitions(
                *(np.zeros(shape, t) for t in (np.int64, np.int64, np.float32, np.int64, bool))
            )
            self._episode_len = np.zeros(num_envs, np.int64)
        if params.replay_sweeps:  # the last seen outcome of every (row, action); next -1: untried
            self._seen_next = np.full(self.q.shape, -1, np.int64)
            self._seen_reward = np.zeros(self.q.shape, np.float32)
            self._seen_terminated = np.zeros(self.q.shape, bool)
        if params.known_moves:
            self._into = self._arrivals(family)

    def act(self, obs: np.ndarray) -> np.ndarray:
        q = np.take(self._q_rows, self._row_base + self._state(obs, self.progress), axis=0)
        if self.params.random_ties:
            # A uniform in [0, 0.5) added to the is-greedy indicator picks a random greedy action.
            is_greedy = q == row_max(q)[:, None]
            noise = self.rng.random(q.shape, dtype=np.float32) * 0.5
            greedy = np.argmax(is_greedy + noise, axis=1)
        else:
            greedy = np.argmax(q, axis=1)
        explore = self.rng.random(self.num_envs, dtype=np.float32) < self.epsilon
        return np.where(explore, self.rng.integers(0, self.num_actions, self.num_envs), greedy)

    def update(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        state = self._state(obs, self.progress)
        progress = self.progress | (rewards > 0) if self.track_progress else self.progress
        next_row = self._row_base + self._state(next_obs, progress)
        step = Transitions(self._row_base + state, actions, rewards, next_row, terminated)
        self._td_update(step)
        done = terminated | truncated
        finished = np.flatnonzero(done)
        if self.params.replay_sweeps:
            if self.params.known_moves:  # the pair taken is one of those revealed
                self._reveal(state, next_obs, next_row, rewards, terminated)
            else:
                envs = np.arange(self.num_envs)
                self._seen_next[envs, state, actions] = next_row
                self._seen_reward[envs, state, actions] = rewards
                self._seen_terminated[envs, state, actions] = terminated
        if self.params.backward_replay:
            self._record(step)
            if len(finished):
                self._replay(finished)
        if self.params.replay_sweeps and len(finished):
            self._sweep(finished)
        if len(finished):
            self.episodes += done
            self.epsilon = self._epsilon()
            progress = progress & ~done
        self.progress = progress

    def _stepped(
        self, value: np.ndarray, reward: np.ndarray, next_value: np.ndarray, terminated: np.ndarray
    ) -> np.ndarray:
        """`value` moved by `lr` toward the one-step target `reward + gamma * next_value`."""
        target = reward + np.float32(self.params.gamma) * np.where(terminated, 0, next_value)
        return value + np.float32(self.params.lr) * (target - value)

    def _td_update(self, t: Transitions) -> None:
        """One Q-learning update per transition."""
        next_value = row_max(np.take(self._q_rows, t.next_row, axis=0))
        index = t.row * self.num_actions + t.action
        value = np.take(self._q_flat, index)
        self._q_flat[index] = self._stepped(value, t.reward, next_value, t.terminated)

    def _record(self, t: Transitions) -> None:
        """Append one step to every sub-env's episode buffer."""
        envs, at = np.arange(self.num_envs), self._episode_len
        for buffer, value in zip(self._episode, t, strict=True):
            buffer[envs, at] = value
        self._episode_len += 1

    def _replay(self, envs: np.ndarray) -> None:
        """Backward sweep over the finished episodes of sub-envs `envs`, then forget them."""
        length = self._episode_len[envs]
        for step in range(int(length.max()) - 1, -1, -1):
            live = envs[length > step]
            self._td_update(Transitions(*(buffer[live, step] for buffer in self._episode)))
        self._episode_len[envs] = 0

    def _sweep(self, envs: np.ndarray) -> None:
        """`replay_sweeps` synchronous updates of every tried (state, action) of sub-envs `envs`."""
        seen_next = self._seen_next[envs]
        tried = seen_next >= 0
        next_rows = np.where(tried, seen_next, 0)
        reward, terminated = self._seen_reward[envs], self._seen_terminated[envs]
        for _ in range(self.params.replay_sweeps):
            q = self.q[envs]
            next_value = row_max(self._q_rows)[next_rows]
            updated = np.where(tried, self._stepped(q, reward, next_value, terminated), q)
            if np.array_equal(updated, q):  # converged: more sweeps change nothing
                break
            self.q[envs] = updated

    def _arrivals(self, family: EnvFamily) -> np.ndarray:
        """`[num_obs, k]`: the (observation, action) pairs, as `obs * num_actions + action`, that
        lead to each observation under the family's moves; -1 pads the shorter rows."""
        moves = family.transition_table()
        if moves is None:
            raise ValueError(
                f"q_learning: known_moves needs a family with deterministic moves; "
                f"{family.name!r} has no transition_table"
            )
        if family.reward_marks_progress and not self.track_progress:
            raise ValueError(
                f"q_learning: known_moves on {family.name!r} needs progress_state (its rewards "
                "depend on progress the observation does not show)"
            )
        order = np.argsort(moves.reshape(-1), kind="stable")
        counts = np.bincount(moves.reshape(-1), minlength=self.num_obs)
        into = np.full((self.num_obs, int(counts.max())), -1, np.int64)
        column = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
        into[np.repeat(np.arange(self.num_obs), counts), column] = order
        return into

    def _reveal(
        self,
        state: np.ndarray,
        next_obs: np.ndarray,
        next_row: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Record this step's outcome for every (state, action) of the same progress layer that
        arrives where it did (`known_moves`): on these grids the outcome depends on the cell
        arrived in and the progress so far, not on where the agent came from."""
        pairs = self._into[next_obs]  # [num_envs, k]
        env, slot = np.nonzero(pairs >= 0)
        layer = state[env] // self.num_obs  # the progress layer the step started in
        flat = pairs[env, slot] + layer * self.num_obs * self.num_actions
        rows, actions = np.divmod(flat, self.num_actions)
        self._seen_next[env, rows, actions] = next_row[env]
        self._seen_reward[env, rows, actions] = rewards[env]
        self._seen_terminated[env, rows, actions] = terminated[env]

    def _state(self, obs: np.ndarray, progress: np.ndarray) -> np.ndarray:
        return obs + progress * self.num_obs if self.track_progress else obs

    def _epsilon(self) -> np.ndarray:
        return linear_epsilon(
            self.episodes,
            start=self.params.eps_start,
            end=self.params.eps_end,
            decay_episodes=self.params.eps_decay_episodes,
        )


def row_max(values: np.ndarray) -> np.ndarray:
    """`values.max(axis=1)` for a few columns: NumPy reduces a short last axis row by row (~10x
    slower than one elementwise maximum per column)."""
    best = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        np.maximum(best, values[:, column], out=best)
    return best
