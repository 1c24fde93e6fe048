"""Every registered family: gymnasium's checker, vector env == plain envs, splits, optimal return."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import ENV_FAMILIES, EnvFamily, make_family

FAMILIES = sorted(ENV_FAMILIES)


def _tasks(family: EnvFamily, num: int, seed: int = 0) -> np.ndarray:
    tasks = family.sample_tasks("train", num, seed=seed)
    if family.name == "bandit":  # deterministic arms, so the two implementations' draws agree
        tasks = (tasks > 0.5).astype(np.float64)
    return tasks


@pytest.mark.parametrize("name", FAMILIES)
def test_plain_env_passes_gymnasium_checker(name: str) -> None:
    family = make_family(name)
    env = family.make_env(family.sample_tasks("train", 1, seed=0)[0])
    assert env.spec is not None and env.spec.id == family.env_id
    check_env(env.unwrapped)
    assert env.observation_space.n == family.num_observations
    assert env.action_space.n == family.num_actions


@pytest.mark.parametrize("name", FAMILIES)
def test_observation_factors_decode_what_the_agent_observes(name: str) -> None:
    """The mixed-radix digits of an observation are its parts (grids: row and column)."""
    family = make_family(name)
    factors = family.observation_factors
    assert int(np.prod(factors)) == family.num_observations
    if name.startswith("darkroom") or name == "key_to_door":
        env = family.make_env(family.sample_tasks("train", 1, seed=0)[0])
        obs, _ = env.reset(seed=0, options={"start": (2, 7)})
        assert np.unravel_index(obs, factors) == (2, 7)


@pytest.mark.parametrize("name", FAMILIES)
def test_vector_env_steps_like_plain_envs(name: str) -> None:
    """Same random actions, over many tasks: identical observations, rewards and episode ends."""
    family = make_family(name)
    tasks = _tasks(family, 24)
    vector = family.make_vector_env(tasks, seed=1)
    assert vector.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    plain = [family.make_env(task) for task in tasks]
    grid_size = getattr(family, "size", None)

    def start(env: gym.Env, obs: int, seed: int | None = None) -> int:
        # Replay the vector env's (random) start in the plain env.
        options = None if grid_size is None else {"start": divmod(int(obs), grid_size)}
        return env.reset(seed=seed, options=options)[0]

    obs, _ = vector.reset()
    assert [
        start(env, o, seed=i) for i, (env, o) in enumerate(zip(plain, obs, strict=True))
    ] == obs.tolist()
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(3 * family.episode_len):
        actions = rng.integers(0, family.num_actions, size=len(tasks))
        obs, rewards, terminated, truncated, info = vector.step(actions)
        for i, env in enumerate(plain):
            o, r, te, tr, _ = env.step(int(actions[i]))
            assert (o, r, te, tr) == (
                info["final_obs"][i],
                rewards[i],
                terminated[i],
                truncated[i],
            ), f"sub-env {i} (task {tasks[i]}) differs"
            if te or tr:
                assert start(env, obs[i]) == obs[i]
        done = terminated | truncated
        np.testing.assert_array_equal(info["_final_obs"], done)
        np.testing.assert_array_equal(obs[~done], info["final_obs"][~done])
        ends += int(done.sum())
    assert ends >= 2 * len(tasks)  # the comparison crossed episode boundaries


def test_a_sub_env_plays_the_same_whatever_the_others_do() -> None:
    """Random starts are drawn per sub-env and episode, not in the order the sub-envs' episodes
    end: sub-env 0 meets the same starts however sub-envs 1.. play (the evaluation relies on it
    when it retires tasks that finished)."""
    family = make_family("key_to_door", size=3, episode_len=6)
    tasks = _tasks(family, 8)
    ours = np.random.default_rng(0).integers(0, family.num_actions, size=200)
    trajectories = []
    for others_seed in (1, 2):
        vector = family.make_vector_env(tasks, seed=3)
        obs, _ = vector.reset()
        others = np.random.default_rng(others_seed)
        trajectory = [obs[0]]
        for action in ours:
            actions = others.integers(0, family.num_actions, size=len(tasks))
            actions[0] = action
            obs, rewards, *_ = vector.step(actions)
            trajectory += [obs[0], rewards[0]]
        trajectories.append(trajectory)
    assert trajectories[0] == trajectories[1]


@pytest.mark.parametrize("name", FAMILIES)
def test_splits_are_deterministic_and_disjoint(name: str) -> None:
    family = make_family(name)
    train = family.sample_tasks("train", 300, seed=3)
    test = family.sample_tasks("test", 300, seed=4)
    np.testing.assert_array_equal(train, family.sample_tasks("train", 300, seed=3))
    assert not np.array_equal(train, family.sample_tasks("train", 300, seed=5))
    assert not {tuple(t) for t in train} & {tuple(t) for t in test}
    assert not {tuple(t) for t in train} & {
        tuple(t) for t in family.sample_tasks("test", 50, seed=3)
    }
    with pytest.raises(ValueError, match="no split"):
        family.sample_tasks("validation", 3, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["darkroom", "darkroom_hard", "key_to_door"])
def test_grid_splits_cover_every_task_evenly(name: str) -> None:
    family = make_family(name, size=5)
    train = family.sample_tasks("train", 1000, seed=0)
    test = family.sample_tasks("test", 1000, seed=0)
    distinct_train, counts = np.unique(train, axis=0, return_counts=True)
    distinct_test = np.unique(test, axis=0)
    num_all = 25 if name.startswith("darkroom") else 25 * 24
    assert len(distinct_train) + len(distinct_test) == num_all
    assert len(distinct_test) == round(0.2 * num_all)
    assert counts.max() - counts.min() <= 1


def test_bandit_ood_favours_even_arms() -> None:
    family = make_family("bandit")
    for split, favoured in [("train", 1), ("test", 1), ("ood", 0)]:
        best = family.sample_tasks(split, 2000, seed=0).argmax(axis=1)
        assert np.mean(best % 2 == favoured) > 0.8, split


@pytest.mark.parametrize("name", FAMILIES)
def test_expert_achieves_optimal_return(name: str) -> None:
    family = make_family(name)
    tasks = family.sample_tasks("train", 200, seed=0)
    vector = family.make_vector_env(tasks, seed=0)
    vector.reset()
    episodes = 200 if name == "bandit" else 3
    returns, done_episodes = np.zeros(len(tasks)), np.zeros(len(tasks), dtype=np.int64)
    episode_returns = np.zeros(
        (len(tasks), episodes + 1)
    )  # the last column collects extra episodes
    while done_episodes.min() < episodes:
        _, rewards, terminated, truncated, _ = vector.step(vector.expert_actions())
        returns += rewards
        done = terminated | truncated
        episode_returns[done, done_episodes[done]] = returns[done]
        returns[done] = 0
        done_episodes = np.minimum(done_episodes + done, episodes)
    optimal = family.optimal_return(tasks)
    if name == "bandit":  # the mean of Bernoulli pulls of the best arm
        np.testing.assert_allclose(episode_returns[:, :-1].mean(), optimal.mean(), atol=0.01)
    else:
        np.testing.assert_array_equal(episode_returns[:, :-1], optimal[:, None].repeat(episodes, 1))


def test_optimal_return_of_dark_room() -> None:
    family = make_family("darkroom")
    goals = np.array([[4, 4], [4, 5], [0, 0], [8, 8]])
    np.testing.assert_array_equal(family.optimal_return(goals), [20, 20, 13, 13])
    np.testing.assert_array_equal(make_family("darkroom_hard").optimal_return(goals), [1, 1, 1, 1])


def test_bad_names_params_and_tasks_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown env 'nope'"):
        make_family("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_family("darkroom", goals=3)
    with pytest.raises(ValueError, match="test_fraction"):
        make_family("darkroom", test_fraction=1.0)
    with pytest.raises(ValueError, match="outside"):
        make_family("darkroom").make_vector_env(np.array([[9, 0]]))
    vector = make_family("darkroom").make_vector_env(np.array([[0, 0], [1, 1]]))
    vector.reset()
    with pytest.raises(ValueError, match="actions must be in"):
        vector.step(np.array([0, 5]))
    with pytest.raises(ValueError, match="expected 2 integer actions"):
        vector.step(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="outside the 9x9 grid"):
        gym.make("zoo/DarkRoom-v0", goal=(9, 0))
    with pytest.raises(ValueError, match="key=\\(row, col\\)"):
        gym.make("zoo/DarkKeyToDoor-v0", key=(1, 1))


GYM_IDS = {
    "zoo/DarkRoom-v0": "darkroom",
    "zoo/DarkRoomHard-v0": "darkroom_hard",
    "zoo/DarkKeyToDoor-v0": "key_to_door",
    "zoo/Bandit-v0": "bandit",
}


@pytest.mark.parametrize("env_id", sorted(GYM_IDS))
def test_gymnasium_make_without_a_task_draws_one_from_a_split(env_id: str) -> None:
    from gymnasium.utils.env_checker import check_env

    from envs import make_family

    env = gym.make(env_id)
    check_env(env.unwrapped)
    family = make_family(GYM_IDS[env_id])
    drawn = [tuple(np.round(env.reset(seed=seed)[1]["task"], 9)) for seed in range(12)]
    assert drawn[3] == tuple(np.round(env.reset(seed=3)[1]["task"], 9))  # seeded
    assert len(set(drawn)) > 1  # and drawn afresh by each seed
    if family.split_size("train") is not None:  # grid worlds: from the split's own pool
        for split in ("train", "test"):
            pool = {tuple(t) for t in family.sample_tasks(split, family.split_size(split), seed=0)}
            env = gym.make(env_id, split=split)
            assert {tuple(env.reset(seed=s)[1]["task"]) for s in range(12)} <= pool
    with pytest.raises(ValueError, match="split"):
        gym.make(env_id, split="nonsense")


def test_a_given_task_still_pins_the_env() -> None:
    env = gym.make("zoo/DarkRoom-v0", goal=(2, 3))
    assert [tuple(env.reset(seed=s)[1]["task"]) for s in range(3)] == [(2, 3)] * 3


@pytest.mark.parametrize("name", ["darkroom", "key_to_door"])
def test_a_lockbox_is_carved_from_the_training_tasks_and_leaves_the_test_split(name: str) -> None:
    plain = make_family(name, size=5)
    carved = make_family(name, size=5, lockbox_fraction=0.1, lockbox_seed=1)

    def tasks(family, split: str) -> set[tuple[int, ...]]:
        return {tuple(t) for t in family.sample_tasks(split, family.split_size(split), seed=0)}

    assert tasks(carved, "test") == tasks(plain, "test")  # every earlier held-out result stands
    lockbox, train = tasks(carved, "lockbox"), tasks(carved, "train")
    assert len(lockbox) == round(0.1 * len(plain.all_tasks()))
    assert lockbox | train == tasks(plain, "train") and not lockbox & train
    assert tasks(make_family(name, size=5, lockbox_fraction=0.1, lockbox_seed=2), "lockbox") != (
        lockbox
    )
    with pytest.raises(ValueError, match="carved before collection"):
        plain.sample_tasks("lockbox", 1, seed=0)
    with pytest.raises(ValueError, match="lockbox_fraction"):
        make_family(name, lockbox_fraction=0.9)
