"""In-context evaluation: stream = parallel forward, window = fresh forward over the last steps,
the context belongs to the task (reset only when the task changes), env mismatch refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones import BACKBONES
from backbones.presets import load_preset, preset_path
from envs import make_family
from zoo.evaluation import (
    EnvMismatchError,
    family_of,
    run_in_context,
    summarise,
)
from zoo.model import InContextLearner

CONTEXT_LEN = 8  # the tiny transformer preset's attention window


def tiny_learner(name: str = "gru", *, seed: int = 0) -> InContextLearner:
    torch.manual_seed(seed)
    return InContextLearner(
        backbone=load_preset(preset_path(name, "tiny")),
        num_observations=81,
        num_actions=5,
        context_len=CONTEXT_LEN,
        env={"name": "darkroom", "params": {}, "episode_len": 20},
    ).eval()


@pytest.fixture(scope="module")
def darkroom():
    family = make_family("darkroom")
    return family, family.sample_tasks("test", 3, seed=0)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_stream_equals_the_parallel_forward_over_the_whole_history(name, darkroom) -> None:
    family, tasks = darkroom
    model = tiny_learner(name)
    rollout = run_in_context(model, family, tasks, episodes=2, mode="stream", record_logits=True)
    assert rollout.done.sum() == 2 * len(tasks)  # two 20-step episodes: one boundary crossed
    observations, actions, rewards = (
        torch.as_tensor(rollout.observations),
        torch.as_tensor(rollout.actions),
        torch.as_tensor(rollout.rewards),
    )
    with torch.no_grad():
        logits, _ = model(observations, *model.previous(actions, rewards))
    torch.testing.assert_close(torch.as_tensor(rollout.logits), logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_window_equals_a_fresh_forward_over_the_last_steps(name, darkroom) -> None:
    family, tasks = darkroom
    model = tiny_learner(name)
    rollout = run_in_context(model, family, tasks, episodes=1, mode="window", record_logits=True)
    observations, actions, rewards = (
        torch.as_tensor(rollout.observations),
        torch.as_tensor(rollout.actions),
        torch.as_tensor(rollout.rewards),
    )
    for t in (0, 3, CONTEXT_LEN - 1, CONTEXT_LEN, 13, observations.shape[1] - 1):
        window = slice(max(t - CONTEXT_LEN + 1, 0), t + 1)
        with torch.no_grad():
            logits, _ = model(
                observations[:, window], *model.previous(actions[:, window], rewards[:, window])
            )
        torch.testing.assert_close(torch.as_tensor(rollout.logits[:, t]), logits[:, -1])
    # past the first window, window mode forgets what stream mode remembers
    stream = run_in_context(model, family, tasks, episodes=1, mode="stream", record_logits=True)
    assert not np.allclose(stream.logits[:, CONTEXT_LEN + 2], rollout.logits[:, CONTEXT_LEN + 2])


def test_state_starts_once_per_task_and_crosses_episodes(darkroom) -> None:
    family, tasks = darkroom
    model = tiny_learner("gru")
    starts = []
    init_state = model.backbone.init_state
    model.backbone.init_state = lambda *a, **k: starts.append(a) or init_state(*a, **k)
    together = run_in_context(model, family, tasks, episodes=3, greedy=True, record_logits=True)
    assert starts == [(len(tasks),)]  # once, for all tasks, never at the two episode boundaries
    # each task's context is its own: a task played alone gives the same policy
    alone = run_in_context(model, family, tasks[1:2], episodes=3, greedy=True, record_logits=True)
    np.testing.assert_allclose(alone.logits[0], together.logits[1], atol=1e-5)
    np.testing.assert_array_equal(alone.returns[0], together.returns[1])


def test_returns_are_per_episode_and_seeded(darkroom) -> None:
    family, tasks = darkroom
    model = tiny_learner("gru")
    first = run_in_context(model, family, tasks, episodes=4, seed=3)
    again = run_in_context(model, family, tasks, episodes=4, seed=3)
    np.testing.assert_array_equal(first.returns, again.returns)
    assert first.returns.shape == (3, 4)
    episode_of_step = np.cumsum(first.done, axis=1) - first.done  # 20-step episodes
    for k in range(4):
        np.testing.assert_allclose(
            first.returns[:, k], np.where(episode_of_step == k, first.rewards, 0).sum(1)
        )


def test_summaries() -> None:
    returns = np.array([[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]])
    summary = summarise(returns, np.array([8.0, 8.0]), final_episodes=2)
    assert summary["return_first"] == 1.0
    assert summary["return_final"] == 3.5
    assert summary["auc"] == 2.5
    assert summary["fraction_optimal"] == 3.5 / 8.0
    assert summary["return_at_2"] == 2.0 and summary["return_at_4"] == 4.0


def test_an_env_the_model_was_not_trained_on_is_refused(darkroom) -> None:
    model = tiny_learner("gru")
    assert family_of(model, env="darkroom").name == "darkroom"
    with pytest.raises(EnvMismatchError, match="trained on env 'darkroom', not 'key_to_door'"):
        family_of(model, env="key_to_door")
    hard = make_family("darkroom_hard")
    with pytest.raises(EnvMismatchError, match="observations"):
        run_in_context(model, hard, hard.sample_tasks("test", 2, seed=0), episodes=1)


@pytest.mark.parametrize("name", ["transformer", "gru", "mamba2"])
@pytest.mark.parametrize("mode", ["stream", "window"])
def test_tasks_that_finish_first_leave_the_batch_and_change_nothing(name, mode) -> None:
    # Key-to-Door on a 3x3 grid: episodes end at the door, so tasks finish their episodes at
    # different steps, and the ones done first stop costing the model anything
    family = make_family("key_to_door", size=3, episode_len=20)
    tasks = family.sample_tasks("train", 24, seed=0)
    torch.manual_seed(0)
    model = InContextLearner(
        backbone=load_preset(preset_path(name, "tiny")),
        num_observations=family.num_observations,
        num_actions=family.num_actions,
        context_len=CONTEXT_LEN,
        env={"name": "key_to_door", "params": {"size": 3, "episode_len": 20}, "episode_len": 20},
    ).eval()
    batches: list[int] = []
    step, forward = model.step, model.forward
    model.step = lambda o, *a, **k: batches.append(len(o)) or step(o, *a, **k)
    model.forward = lambda o, *a, **k: batches.append(len(o)) or forward(o, *a, **k)
    retired = run_in_context(model, family, tasks, episodes=3, mode=mode, seed=1)
    assert batches[0] == len(tasks) and min(batches) < len(tasks)  # some left early
    everyone = run_in_context(model, family, tasks, episodes=3, mode=mode, seed=1, retire=False)
    np.testing.assert_array_equal(retired.returns, everyone.returns)
    # up to each task's last episode, its steps are the same too
    for task in range(len(tasks)):
        end = int(np.flatnonzero(everyone.done[task])[2]) + 1
        np.testing.assert_array_equal(retired.actions[task, :end], everyone.actions[task, :end])
