"""The backbone contract, pinned for every registered backbone at its tiny preset.

A new member is covered the moment it registers and ships its presets. Equivalences are checked in
float32 to ATOL: chunked forward with carried state, and a loop of `step`, both against one
parallel forward over a sequence longer than the model's `context_len` (when it has one).
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from backbones import BACKBONES, Backbone, State, count_parameters, create_backbone
from backbones.presets import (
    MAX_SIZE_SPREAD,
    SIZES,
    find_presets,
    load_preset,
    parameter_count,
    preset_path,
    size_spread,
)

ATOL = 1e-5
BATCH = 2
NAMES = sorted(BACKBONES)


def tiny(name: str) -> Backbone:
    torch.manual_seed(0)
    return load_preset(preset_path(name, "tiny")).eval()


def sequence_length(backbone: Backbone) -> int:
    """Long enough to pass the attention window twice, when the backbone has one."""
    return max(19, 2 * getattr(backbone, "context_len", 0) + 3)


def inputs(backbone: Backbone) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, sequence_length(backbone), backbone.d_model, generator=generator)


def state_tensors(state: State) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    state.map_tensors(lambda t: found.append(t) or t)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_state_type(name: str) -> None:
    backbone = tiny(name)
    x = inputs(backbone)
    y, state = backbone(x)
    assert y.shape == x.shape
    assert isinstance(state, State) and dataclasses.is_dataclass(state)
    y_t, state = backbone.step(x[:, 0], state=state)
    assert y_t.shape == (BATCH, backbone.d_model)
    assert isinstance(state, State)


@pytest.mark.parametrize("name", NAMES)
def test_init_state_equals_no_state(name: str) -> None:
    backbone = tiny(name)
    x = inputs(backbone)
    state = backbone.init_state(BATCH, device=x.device, dtype=x.dtype)
    torch.testing.assert_close(backbone(x, state=state)[0], backbone(x)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_chunked_forward_equals_full_forward(name: str) -> None:
    backbone = tiny(name)
    x = inputs(backbone)
    with torch.no_grad():
        y, _ = backbone(x)
        for split in (1, 5, x.shape[1] - 2):
            y_head, state = backbone(x[:, :split])
            y_tail, _ = backbone(x[:, split:], state=state)
            torch.testing.assert_close(torch.cat([y_head, y_tail], 1), y, atol=ATOL, rtol=0)
        # three chunks, the middle one carried through a state that was itself carried
        y1, state = backbone(x[:, :4])
        y2, state = backbone(x[:, 4:11], state=state)
        y3, _ = backbone(x[:, 11:], state=state)
        torch.testing.assert_close(torch.cat([y1, y2, y3], 1), y, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_step_loop_equals_full_forward(name: str) -> None:
    backbone = tiny(name)
    x = inputs(backbone)
    with torch.no_grad():
        y, _ = backbone(x)
        state = backbone.init_state(BATCH, device=x.device, dtype=x.dtype)
        steps = []
        for t in range(x.shape[1]):
            y_t, state = backbone.step(x[:, t], state=state)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter_and_through_the_state(name: str) -> None:
    backbone = tiny(name).train()
    x = inputs(backbone).requires_grad_(True)
    split = x.shape[1] - 3
    _, state = backbone(x[:, :split])
    y_tail, _ = backbone(x[:, split:], state=state)
    y_tail.square().mean().backward()
    for param_name, param in backbone.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert param.grad.abs().sum() > 0, f"{name}: zero gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {param_name}"
    assert x.grad[:, :split].abs().sum() > 0, f"{name}: no gradient flows through the state"


@pytest.mark.parametrize("name", NAMES)
def test_one_adamw_step_changes_parameters(name: str) -> None:
    backbone = tiny(name).train()
    x = inputs(backbone)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in backbone.parameters()]
    loss = backbone(x)[0].square().mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, backbone.parameters(), strict=True)]
    assert all(changed), f"{name}: {changed.count(False)} parameter tensors did not change"


@pytest.mark.parametrize("name", NAMES)
def test_state_detach_and_map(name: str) -> None:
    backbone = tiny(name)
    x = inputs(backbone)
    _, state = backbone(x[:, :6])
    assert any(t.requires_grad for t in state_tensors(state))
    detached = state.detach()
    assert type(detached) is type(state)
    assert not any(t.requires_grad for t in state_tensors(detached))
    for a, b in zip(state_tensors(state), state_tensors(detached), strict=True):
        assert torch.equal(a, b)
    doubled = state.map_tensors(lambda t: t.double())
    assert all(t.dtype == torch.float64 for t in state_tensors(doubled))
    with torch.no_grad():
        y_attached, _ = backbone(x[:, 6:], state=state)
        y_detached, _ = backbone(x[:, 6:], state=detached)
    torch.testing.assert_close(y_detached, y_attached, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_constructor_is_keyword_only_and_typed(name: str) -> None:
    """LightningCLI can see and check every constructor argument."""
    parameters = list(inspect.signature(BACKBONES[name].__init__).parameters.values())[1:]
    assert parameters, f"{name}: constructor takes no arguments"
    for parameter in parameters:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {parameter.name}"
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}: {parameter.name}"


@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_has_all_presets_of_its_own_class(name: str) -> None:
    for size in SIZES:
        backbone = load_preset(preset_path(name, size))
        assert backbone.name == name, f"{name}-{size}.yaml builds {backbone.name!r}"


@pytest.mark.parametrize("size", SIZES)
def test_presets_of_a_size_have_matched_parameter_counts(size: str) -> None:
    counts = {p.name: parameter_count(p.path) for p in find_presets() if p.size == size}
    assert set(counts) >= set(BACKBONES)
    assert size_spread(list(counts.values())) <= MAX_SIZE_SPREAD, counts
    if size == "tiny":
        assert max(counts.values()) < 20_000, counts


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown backbone 'nope'; known: "):
        create_backbone("nope")


def test_create_backbone_builds_the_registered_class() -> None:
    backbone = create_backbone("gru", d_model=8, hidden_size=4, depth=1)
    assert isinstance(backbone, BACKBONES["gru"]) and count_parameters(backbone) > 0


def test_invalid_preset_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "gru-tiny.yaml"
    bad.write_text("class_path: backbones.rnn.GRUBackbone\ninit_args:\n  d_model: 8\n  hiden: 4\n")
    with pytest.raises(ValueError, match="invalid backbone preset"):
        load_preset(bad)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_of_another_depth_is_refused(name: str) -> None:
    """Layers and states meet in strict zips: a state from a deeper model is an error, not a
    silently truncated state."""
    import yaml

    init_args = dict(yaml.safe_load(preset_path(name, "tiny").read_text())["init_args"])
    depth_arg = "depth"
    deeper = create_backbone(name, **{**init_args, depth_arg: init_args[depth_arg] + 1}).eval()
    backbone = tiny(name)
    state = deeper.init_state(BATCH)
    with pytest.raises((ValueError, RuntimeError)):
        backbone.step(inputs(backbone)[:, 0], state=state)


@pytest.mark.parametrize("name", NAMES)
def test_shared_size_names(name: str) -> None:
    """Every member names its sizes alike: `d_model` and `depth` (what a tuner sets), and every
    other width argument it declares in `width_args` is a constructor argument."""
    accepted = set(inspect.signature(BACKBONES[name].__init__).parameters)
    assert {"d_model", "depth"} <= accepted
    assert "d_model" in BACKBONES[name].width_args
    assert set(BACKBONES[name].width_args) <= accepted


def test_fla_and_mamba_ssm_are_imported_by_the_first_member_that_needs_them() -> None:
    """Importing fla (Triton's set-up) or mamba-ssm (Hugging Face transformers) takes seconds: a
    process that trains a transformer, collects data or writes a report pays neither; the first
    member built on one imports it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import backbones, cli.fit, sweeps.child, zoo.training\n"
        "from backbones.presets import load_preset, preset_path\n"
        "loaded = lambda: {m.split('.')[0] for m in sys.modules} & {'fla', 'mamba_ssm'}\n"
        "load_preset(preset_path('transformer', 'tiny'))\n"
        "assert not loaded(), loaded()\n"
        "load_preset(preset_path('mamba', 'tiny'))\n"
        "assert loaded() == {'mamba_ssm'}, loaded()\n"
        "load_preset(preset_path('gated_deltanet', 'tiny'))\n"
        "assert loaded() == {'mamba_ssm', 'fla'}, loaded()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
