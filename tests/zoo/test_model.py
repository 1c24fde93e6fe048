"""InContextLearner: tokens, the step API, the loss falling, the learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from backbones.presets import load_preset, preset_path
from zoo.model import InContextLearner
from zoo.schedules import warmup_cosine, warmup_stable_decay

ENV = {"name": "darkroom", "params": {}, "episode_len": 20, "dataset": "data/darkroom"}


def tiny_learner(name: str = "gru", **kwargs) -> InContextLearner:
    torch.manual_seed(0)
    return InContextLearner(
        backbone=load_preset(preset_path(name, "tiny")),
        num_observations=81,
        num_actions=5,
        context_len=8,
        env=ENV,
        **kwargs,
    )


def test_previous_action_and_reward_start_with_none() -> None:
    model = tiny_learner()
    actions = torch.tensor([[3, 1, 4], [0, 2, 2]])
    rewards = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    prev_actions, prev_rewards = model.previous(actions, rewards)
    assert prev_actions.tolist() == [[5, 3, 1], [5, 0, 2]]  # 5 = "no previous action"
    assert prev_rewards.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.5, 0.0]]


def test_step_equals_forward() -> None:
    model = tiny_learner("gru").eval()
    observations = torch.randint(0, 81, (2, 6))
    prev_actions, prev_rewards = model.previous(torch.randint(0, 5, (2, 6)), torch.rand(2, 6))
    with torch.no_grad():
        logits, _ = model(observations, prev_actions, prev_rewards)
        state = model.initial_state(2)
        for t in range(6):
            step_logits, state = model.step(
                observations[:, t], prev_actions[:, t], prev_rewards[:, t], state=state
            )
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-4)


def test_factored_observations_embed_each_digit_once() -> None:
    """Dark Room's (9, 9): the token of cell `row * 9 + col` is row's embedding plus col's."""
    model = tiny_learner(observation_factors=(9, 9))
    assert model.objective.observation_embedding.num_embeddings == 18
    table = model.objective.observation_embedding.weight
    cells = torch.tensor([[0, 13, 80]])  # (0, 0), (1, 4), (8, 8)
    no_action, no_reward = torch.full_like(cells, 5), torch.zeros(1, 3)
    tokens = model.embed(cells, no_action, no_reward)
    rest = model.objective.action_embedding.weight[5] + model.objective.reward_projection.bias
    for t, (row, col) in enumerate([(0, 0), (1, 4), (8, 8)]):
        torch.testing.assert_close(tokens[0, t], table[row] + table[9 + col] + rest)


def test_index_coding_and_bad_factors() -> None:
    model = tiny_learner(observation_factors=(9, 9), observation_coding="index")
    assert (
        model.observation_factors == (81,)
        and model.objective.observation_embedding.num_embeddings == 81
    )
    with pytest.raises(ValueError, match="do not make 81 observations"):
        tiny_learner(observation_factors=(9, 8))
    with pytest.raises(ValueError, match="observation_coding"):
        tiny_learner(observation_coding="onehot")


def test_loss_falls_on_a_tiny_dataset() -> None:
    """A few dozen AdamW steps on windows whose action is a function of the observation."""
    model = tiny_learner("gru")
    generator = torch.Generator().manual_seed(0)
    observations = torch.randint(0, 81, (64, 8), generator=generator)
    batch = {
        "observations": observations,
        "actions": observations % 5,
        "rewards": torch.rand(64, 8, generator=generator),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss, _ = model._loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.4  # about log(5) at the start
    assert losses[-1] < 0.5 * losses[0]
    _, metrics = model._loss(batch)
    assert metrics["action_acc"] > 0.6


def test_warmup_then_cosine_decay() -> None:
    factor = warmup_cosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(110) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)
    values = [factor(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_warmup_stable_decay_shares_its_stable_part_between_lengths() -> None:
    long, short = (
        warmup_stable_decay(warmup_steps=10, total_steps=t, cooldown=0.2, min_ratio=0.0)
        for t in (1000, 500)
    )
    assert long(0) == pytest.approx(0.1) and long(9) == pytest.approx(1.0)
    # the same rate until the shorter run's decay (step 400): a checkpoint there is shared
    assert [long(s) for s in range(400)] == [short(s) for s in range(400)]
    assert short(450) == pytest.approx(0.5) and short(500) == pytest.approx(0.0)
    assert long(799) == 1.0 and long(900) == pytest.approx(0.5) and long(1000) == 0.0


def test_hyperparameters_record_the_env_not_a_live_module() -> None:
    model = tiny_learner(lr=1e-3)
    assert model.hparams["env"] == ENV and model.hparams["lr"] == 1e-3
    assert model.hparams["context_len"] == 8
    assert "backbone" not in model.hparams  # a module built in Python is no config


def test_the_backbone_must_be_a_backbone() -> None:
    with pytest.raises(TypeError, match="configs/backbone"):
        InContextLearner(backbone=nn.Linear(4, 4), num_observations=3, num_actions=2, context_len=4)


def tiny_batch(steps: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "observations": torch.randint(0, 81, (3, steps), generator=generator),
        "actions": torch.randint(0, 5, (3, steps), generator=generator),
        "rewards": torch.randint(0, 2, (3, steps), generator=generator).float(),
    }


def test_token_mask_acts_in_training_only() -> None:
    torch.manual_seed(0)
    masked = tiny_learner(token_mask=0.5)
    plain = tiny_learner()
    plain.load_state_dict(masked.state_dict())
    batch = tiny_batch()
    masked.train()
    losses = {round(masked._window_loss(batch)[0].item(), 6) for _ in range(4)}
    assert len(losses) > 1  # a fresh mask every call
    plain.train()
    assert plain._window_loss(batch)[0].item() not in losses
    masked.eval(), plain.eval()
    assert masked._window_loss(batch)[0].item() == pytest.approx(
        plain._window_loss(batch)[0].item()
    )


def test_label_smoothing_is_torchs() -> None:
    model = tiny_learner(label_smoothing=0.1).eval()
    batch = tiny_batch()
    prev_actions, prev_rewards = model.previous(batch["actions"], batch["rewards"])
    logits, _ = model(batch["observations"], prev_actions, prev_rewards)
    expected = nn.functional.cross_entropy(
        logits.reshape(-1, 5), batch["actions"].reshape(-1), label_smoothing=0.1
    )
    assert model._window_loss(batch)[0].item() == pytest.approx(expected.item())


@pytest.mark.parametrize("name", ["token_mask", "label_smoothing"])
def test_regulariser_ranges(name: str) -> None:
    with pytest.raises(ValueError, match=f"model.{name} must be in"):
        tiny_learner(**{name: 1.0})


def test_the_attention_window_follows_the_training_context() -> None:
    from backbones.transformer import TransformerBackbone

    backbone = load_preset(preset_path("transformer", "100k"))
    assert backbone.context_len is None  # the preset leaves it to the data
    learner = InContextLearner(
        backbone=backbone, num_observations=81, num_actions=5, context_len=40, env=ENV
    )
    assert learner.backbone.context_len == 40
    assert learner.backbone.window_for(41) == 39 and learner.backbone.window_for(40) is None
    pinned = TransformerBackbone(d_model=16, depth=1, heads=2, context_len=8)
    InContextLearner(backbone=pinned, num_observations=81, num_actions=5, context_len=40, env=ENV)
    assert pinned.context_len == 8  # a window given explicitly is kept
    alone = TransformerBackbone(d_model=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="context_len is unset"):
        alone(torch.zeros(1, 3, 16))


CARRIED = [
    "gru",
    "lstm",
    "mamba",
    "mamba2",
    "linear_attention",
    "simple_gla",
    "gated_deltanet",
    "rwkv7",
    "mom",
]


def chunk(batch: dict[str, torch.Tensor], start: int, stop: int, first: bool):
    part = {key: value[:, start:stop] for key, value in batch.items()}
    return {**part, "first": torch.full((len(batch["actions"]),), first)}


@pytest.mark.parametrize("name", CARRIED)
def test_a_carried_state_trains_as_one_long_window(name: str) -> None:
    """`carry_state`: the loss of two consecutive windows, the second after the first's state
    (and its last action and reward), is the loss of one window over both; a row marked `first`
    starts afresh, as a window on its own."""
    model = tiny_learner(name, carry_state=True).train()
    batch = tiny_batch(12)
    whole, _ = model._window_loss(batch)
    one, _ = model._carried_loss(chunk(batch, 0, 6, True))
    two, _ = model._carried_loss(chunk(batch, 6, 12, False))
    torch.testing.assert_close((one + two) / 2, whole, atol=1e-5, rtol=1e-4)
    assert model._carried is not None
    for value in model._carried[0].tensors().values():
        for tensor in value if isinstance(value, tuple) else (value,):
            assert not tensor.requires_grad
    alone, _ = model._window_loss(chunk(batch, 6, 12, True))
    again, _ = model._carried_loss(chunk(batch, 6, 12, True))
    torch.testing.assert_close(again, alone, atol=1e-5, rtol=1e-4)


def test_reset_rows_only_where_a_history_starts() -> None:
    model = tiny_learner("gru", carry_state=True).eval()
    batch = tiny_batch(12)
    model._carried_loss(chunk(batch, 0, 6, True))
    state = model._carried[0]
    fresh = model.initial_state(3)
    rows = torch.tensor([True, False, True])
    mixed = state.where(rows, fresh)
    torch.testing.assert_close(mixed.hidden[:, 1], state.hidden[:, 1])
    torch.testing.assert_close(mixed.hidden[:, [0, 2]], fresh.hidden[:, [0, 2]])
    assert not torch.equal(state.hidden[:, 0], fresh.hidden[:, 0])


def dtypes(state) -> list[torch.dtype]:
    found: list[torch.dtype] = []
    state.map_tensors(lambda t: found.append(t.dtype) or t)
    return found


@pytest.mark.parametrize("name", CARRIED)
def test_the_carried_state_follows_the_module_to_another_dtype(name: str) -> None:
    """`.double()` (as `.to(device)` on a GPU) moves the carried state with the weights, in the
    dtypes `init_state` gives at the new dtype (a state a member keeps in float32, fla's memory,
    stays float32), and the next window's loss runs on it."""
    model = tiny_learner(name, carry_state=True).train()
    batch = tiny_batch(12)
    model._carried_loss(chunk(batch, 0, 6, True))
    for dtype in (torch.float64, torch.bfloat16):
        model.to(dtype)
        assert model._carried is not None
        state, actions, rewards = model._carried
        assert dtypes(state) == dtypes(model.backbone.init_state(3, dtype=dtype)), dtype
        assert actions.dtype == torch.long and rewards.dtype == torch.float32  # data, not weights
        if dtype == torch.float64:
            model._carried_loss(chunk(batch, 6, 12, False))
    assert torch.float64 not in dtypes(model._carried[0])


def test_carry_state_needs_a_fixed_size_state_and_no_compile() -> None:
    with pytest.raises(ValueError, match=r"fixed size.*drop data\.carry_state"):
        tiny_learner("transformer", carry_state=True)
    with pytest.raises(ValueError, match=r"model\.compile false"):
        tiny_learner("gru", carry_state=True, compile=True)


def test_a_checkpoint_from_before_objectives_loads_its_layers() -> None:
    """Behaviour cloning's layers were the learner's own until 2026-12-07: a checkpoint of then
    names them without `objective.`; the learner reads them back where they are now."""
    model, fresh = tiny_learner(), tiny_learner()
    legacy = {k.removeprefix("objective."): v for k, v in model.state_dict().items()}
    assert "head.1.weight" in legacy and not any(k.startswith("objective.") for k in legacy)
    checkpoint = {"state_dict": dict(legacy)}
    fresh.on_load_checkpoint(checkpoint)  # what Lightning calls before loading the weights
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: every key where it belongs
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_an_objective_given_takes_its_own_settings() -> None:
    from zoo.objectives import BehaviourCloning

    with pytest.raises(ValueError, match="set it in the objective's init_args"):
        tiny_learner(objective=BehaviourCloning(), label_smoothing=0.1)
    with pytest.raises(TypeError, match=r"zoo\.objectives\.Objective"):
        tiny_learner(objective=torch.nn.Linear(2, 2))
    assert (
        tiny_learner(objective=BehaviourCloning(label_smoothing=0.2)).objective.label_smoothing
        == 0.2
    )
