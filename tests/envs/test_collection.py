"""collect_histories: layout of the arrays, subsampling, determinism, and replay in the plain env."""

from __future__ import annotations

import numpy as np
import pytest

from envs import Histories, make_family
from envs.collection import collect_histories, kept_episodes
from envs.learners import make_learner


def _collect(name: str, *, tasks: int = 6, episodes: int = 7, seed: int = 0, **kwargs) -> Histories:
    family = make_family(name)
    table = family.sample_tasks("train", tasks, seed=0)
    learner = None
    if not kwargs.get("expert"):
        learner_name = "thompson" if name == "bandit" else "q_learning"
        learner = make_learner(learner_name, num_envs=tasks, family=family, seed=seed)
    return collect_histories(family, table, learner, episodes=episodes, seed=seed, **kwargs)


def test_kept_episodes_rule() -> None:
    np.testing.assert_array_equal(kept_episodes(10, 3), [0, 3, 6, 9])
    np.testing.assert_array_equal(kept_episodes(8, 3), [0, 3, 6, 7])  # the last one always
    np.testing.assert_array_equal(kept_episodes(4, 1), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="keep_every"):
        kept_episodes(4, 0)


@pytest.mark.parametrize("name", ["darkroom", "darkroom_hard", "key_to_door", "bandit"])
@pytest.mark.parametrize("keep_every", [1, 3])
def test_histories_layout(name: str, keep_every: int) -> None:
    family = make_family(name)
    histories = _collect(name, keep_every=keep_every, task_index=np.arange(10, 16))
    kept = kept_episodes(7, keep_every)
    offsets = histories.offsets
    assert offsets[0] == 0 and offsets[-1] == histories.num_steps
    assert (np.diff(offsets) > 0).all()
    np.testing.assert_array_equal(histories.task_index, np.arange(10, 16))
    assert histories.learning_curve.shape == (6, 7)
    dtypes = {"observations": np.int32, "actions": np.int32, "rewards": np.float32, "done": bool}
    for key, dtype in {**dtypes, "episode": np.int32}.items():
        assert (
            getattr(histories, key).dtype == dtype and len(getattr(histories, key)) == offsets[-1]
        )
    for h in range(histories.num_histories):
        steps = slice(offsets[h], offsets[h + 1])
        done, episode = histories.done[steps], histories.episode[steps]
        assert done[-1] and done.sum() == len(kept)
        ends = np.flatnonzero(done)
        segment = np.searchsorted(ends, np.arange(len(done)))  # the kept episode of each step
        np.testing.assert_array_equal(episode, kept[segment])
        lengths = np.diff(np.concatenate([[-1], ends]))
        assert (lengths <= family.episode_len).all()
        if name == "darkroom":
            assert (lengths == family.episode_len).all()
        # The learning curve holds every episode's return, kept episodes included.
        returns = np.bincount(segment, histories.rewards[steps])
        np.testing.assert_allclose(histories.learning_curve[h, kept], returns, rtol=1e-6)


@pytest.mark.parametrize("keep_every", [1, 2])
def test_recorded_steps_replay_in_the_plain_env(keep_every: int) -> None:
    """Each kept episode, replayed action by action from its first observation, gives the same
    observations, rewards and episode ends in the plain gymnasium env."""
    family = make_family("key_to_door")
    tasks = family.sample_tasks("train", 4, seed=0)
    learner = make_learner("q_learning", num_envs=4, family=family, seed=0)
    histories = collect_histories(family, tasks, learner, episodes=6, keep_every=keep_every, seed=0)
    for h in range(4):
        env = family.make_env(tasks[h])
        expected_obs = None  # None: the next recorded step starts a (kept) episode
        for i in range(histories.offsets[h], histories.offsets[h + 1]):
            obs = int(histories.observations[i])
            if expected_obs is None:
                expected_obs = env.reset(options={"start": divmod(obs, family.size)})[0]
            assert obs == expected_obs
            expected_obs, reward, terminated, truncated, _ = env.step(int(histories.actions[i]))
            assert reward == histories.rewards[i]
            assert (terminated or truncated) == histories.done[i]
            if histories.done[i]:
                expected_obs = None


def test_collection_is_deterministic() -> None:
    one, two, other = (_collect("key_to_door", seed=s) for s in (0, 0, 1))
    for key in Histories.PER_STEP + Histories.PER_HISTORY:
        np.testing.assert_array_equal(getattr(one, key), getattr(two, key))
    assert one.num_steps != other.num_steps or not np.array_equal(one.actions, other.actions)


@pytest.mark.parametrize("name", ["darkroom", "darkroom_hard", "key_to_door"])
def test_expert_histories_reach_the_optimal_return(name: str) -> None:
    family = make_family(name)
    tasks = family.sample_tasks("train", 16, seed=0)
    histories = collect_histories(family, tasks, None, episodes=3, expert=True, seed=0)
    optimal = family.optimal_return(tasks)
    np.testing.assert_array_equal(histories.learning_curve, optimal[:, None].repeat(3, axis=1))


def test_progress_counts_every_transition() -> None:
    calls: list[int] = []
    histories = _collect("darkroom_hard", tasks=64, episodes=40, progress=calls.append)
    assert len(calls) >= 2 and sum(calls) == histories.num_steps


def test_bad_arguments_fail_clearly() -> None:
    family = make_family("darkroom")
    tasks = family.sample_tasks("train", 2, seed=0)
    with pytest.raises(ValueError, match="needs a learner"):
        collect_histories(family, tasks, None, episodes=2, seed=0)
    with pytest.raises(ValueError, match="one entry per task"):
        collect_histories(family, tasks, None, episodes=2, seed=0, expert=True, task_index=[0])
