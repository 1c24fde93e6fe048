"""Gated DeltaNet, RWKV-7 and MoM: the mixers against fla's own layer `forward` (its Triton pieces
swapped for fla's reference ops on CPU), MoM against one Gated DeltaNet per memory over that
memory's own tokens, the clear errors, and on a GPU fla's kernels against the CPU path.

The contract equivalences (chunked == full, step loop == full, gradients) run for the three
members in `test_registry.py` at their tiny presets.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from backbones._fla_ops import Block
from backbones.gated_deltanet import GatedDeltaNetBackbone, gated_deltanet_mix
from backbones.mom import MoMBackbone, mom_mix, route
from backbones.rwkv7 import RWKV7Backbone, rwkv7_mix

with warnings.catch_warnings():
    warnings.filterwarnings("ignore")
    import fla.layers.gated_deltanet as fla_gated_deltanet
    import fla.layers.rwkv7 as fla_rwkv7
    from fla.layers import GatedDeltaNet
    from fla.modules.norm.layernorm_gated import rms_norm_ref
    from fla.modules.token_shift import token_shift_ref
    from fla.ops.gated_delta_rule.gate import naive_gdn_gate
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
    from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence
    from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7
    from fla.ops.rwkv7.fused_k_update import k_update_ref
    from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref

ATOL = 1e-5
D_MODEL, HEADS = 16, 2


def first_attn(backbone: torch.nn.Module) -> torch.nn.Module:
    block = backbone.blocks[0]
    assert isinstance(block, Block)
    return block.attn


# --- fla's layer `forward` on CPU: its Triton pieces swapped for its reference ops -------------


def conv_ref(x, weight, bias=None, activation=None, **_):
    """fla's `causal_conv1d` on `[B, T, C]` (weight `[C, W]`), from zeros."""
    y = F.conv1d(
        F.pad(x.transpose(1, 2), (weight.shape[-1] - 1, 0)),
        weight.unsqueeze(1),
        bias,
        groups=weight.shape[0],
    )
    return (F.silu(y) if activation else y).transpose(1, 2), None


def gated_delta_rule_ref(
    q,
    k,
    v,
    g,
    beta,
    initial_state=None,
    output_final_state=False,
    use_qk_l2norm_in_kernel=False,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    use_gate_in_kernel=False,
    A_log=None,
    dt_bias=None,
    **_,
):
    """fla's `chunk_gated_delta_rule` with its in-kernel options, by the recurrent reference."""
    if use_qk_l2norm_in_kernel:
        q, k = (t / (t.square().sum(-1, keepdim=True) + 1e-6).sqrt() for t in (q, k))
    if use_beta_sigmoid_in_kernel:
        beta = beta.sigmoid() * (2 if allow_neg_eigval else 1)
    if use_gate_in_kernel:
        g = naive_gdn_gate(g, A_log, dt_bias)
    return naive_recurrent_gated_delta_rule(
        q, k, v, beta, g, initial_state=initial_state, output_final_state=output_final_state
    )


def rwkv7_rule_ref(r, w, k, v, a, b, scale=1.0, initial_state=None, **_):
    """fla's `chunk_rwkv7` by the recurrent reference (heads first, scale 1/sqrt(K) built in)."""
    r, w, k, v, a, b = (t.transpose(1, 2) for t in (r, w, k, v, a, b))
    o, state = dplr_recurrence(r * scale * math.sqrt(r.shape[-1]), k, v, a, b, w, initial_state)
    return o.transpose(1, 2), state


def test_gated_deltanet_mixer_is_fla_gated_deltanet(monkeypatch) -> None:
    torch.manual_seed(0)
    attn = first_attn(GatedDeltaNetBackbone(d_model=D_MODEL, depth=1, heads=HEADS))
    monkeypatch.setattr(fla_gated_deltanet, "causal_conv1d", conv_ref)
    monkeypatch.setattr(fla_gated_deltanet, "chunk_gated_delta_rule", gated_delta_rule_ref)
    norm = attn.o_norm
    monkeypatch.setattr(
        norm, "forward", lambda x, g, **_: rms_norm_ref(x, norm.weight, None, z=g, eps=norm.eps)
    )
    x = torch.randn(2, 37, D_MODEL)
    conv = torch.zeros(2, 2 * attn.key_dim + attn.value_dim, attn.conv_size - 1)
    expected = attn(x)[0]
    torch.testing.assert_close(
        gated_deltanet_mix(attn, x, conv, None)[0], expected, atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("layer", [0, 1])
def test_rwkv7_mixer_is_fla_rwkv7_attention(layer: int, monkeypatch) -> None:
    torch.manual_seed(0)
    attn = RWKV7Backbone(d_model=D_MODEL, depth=2, heads=HEADS).blocks[layer].attn
    monkeypatch.setattr(fla_rwkv7, "token_shift", lambda x, *_, **__: (token_shift_ref(x), None))
    monkeypatch.setattr(fla_rwkv7, "fused_addcmul_rwkv7", torch_addcmul_rwkv7)
    monkeypatch.setattr(fla_rwkv7, "fused_k_rwkv7", k_update_ref)
    monkeypatch.setattr(fla_rwkv7, "chunk_rwkv7", rwkv7_rule_ref)
    monkeypatch.setattr(fla_rwkv7, "gate_output_correction", gate_output_correction_ref)
    x = torch.randn(2, 37, D_MODEL)
    v_first = None if layer == 0 else torch.randn(2, 37, D_MODEL)
    expected, _, _, expected_v_first = attn(x, v_first=v_first)
    mixed, _, _, v_first = rwkv7_mix(attn, x, torch.zeros(2, D_MODEL), None, v_first)
    torch.testing.assert_close(mixed, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(v_first, expected_v_first, atol=0, rtol=0)


def test_rwkv7_keeps_fla_initialisation_but_its_zeros() -> None:
    """Every weight fla starts at zero is drawn small (so that it and the weights before it
    learn); the rest is fla's RWKV-7 initialisation."""
    torch.manual_seed(0)
    backbone = RWKV7Backbone(d_model=D_MODEL, depth=2, heads=HEADS)
    for name, param in backbone.named_parameters():
        if name.endswith("weight") and param.ndim == 2:
            assert param.any(), name
    attn = first_attn(backbone)
    assert torch.all(attn.k_a == 1.02) and torch.all(attn.r_k == -0.04)
    assert 0 < attn.o_proj.weight.std() < 0.03


# --- MoM: one Gated DeltaNet per memory, over the tokens routed to it ---------------------------


def memory_as_gated_deltanet(attn: torch.nn.Module, m: int) -> GatedDeltaNet:
    """A Gated DeltaNet layer with memory `m`'s weights (and the shared ones) of a MoM layer."""
    gdn = GatedDeltaNet(
        hidden_size=attn.hidden_size,
        head_dim=attn.head_qk_dim,
        num_heads=attn.num_heads,
        expand_v=attn.expand_v,
        conv_size=attn.conv_size,
    )
    weights = {
        name: value
        for name, value in attn.state_dict().items()
        if not name.startswith(("k_proj", "v_proj", "a_proj", "b_proj", "gate"))
    }
    for name in ("k_proj", "v_proj", "a_proj", "b_proj"):
        weights[f"{name}.weight"] = getattr(attn, name)[m].weight
    gdn.load_state_dict(weights)
    return gdn


def test_mom_is_a_gated_deltanet_per_memory_over_its_own_tokens() -> None:
    """Top-1 routing: a token's output is its memory's Gated DeltaNet output over the tokens routed
    to that memory, in time order (short convolutions included); each memory's final state is
    that Gated DeltaNet's."""
    torch.manual_seed(0)
    backbone = MoMBackbone(d_model=D_MODEL, depth=1, heads=HEADS, num_memories=3, topk=1)
    attn = first_attn(backbone)
    x = torch.randn(2, 41, D_MODEL)
    state = backbone.init_state(2)
    with torch.no_grad():
        y, conv, memory = mom_mix(attn, x, state.conv[0], None)
        routed, _ = route(attn, x)
        for m in range(3):
            gdn = memory_as_gated_deltanet(attn, m)
            for b in range(2):
                (tokens,) = routed[b, :, m].nonzero(as_tuple=True)
                assert len(tokens) > 2, "a memory with too few tokens tests too little"
                expected, gdn_conv, gdn_memory = gated_deltanet_mix(
                    gdn, x[b : b + 1, tokens], torch.zeros_like(conv[b : b + 1, m]), None
                )
                torch.testing.assert_close(y[b, tokens], expected[0], atol=ATOL, rtol=0)
                torch.testing.assert_close(conv[b, m], gdn_conv[0], atol=ATOL, rtol=0)
                torch.testing.assert_close(memory[b, m], gdn_memory[0], atol=ATOL, rtol=0)


# --- clear errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "args", "match"),
    [
        (GatedDeltaNetBackbone, {"d_model": 24, "heads": 4}, "key width per head must be an even"),
        (MoMBackbone, {"d_model": 24, "heads": 4}, "key width per head must be an even"),
        (RWKV7Backbone, {"d_model": 24, "heads": 8}, "key width per head must be an even"),
        (GatedDeltaNetBackbone, {"d_model": 16, "heads": 3}, "heads=3 must divide d_model=16"),
        (MoMBackbone, {"d_model": 16, "heads": 2, "topk": 5}, r"topk must be in \[1, num_memo"),
        (RWKV7Backbone, {"d_model": 16, "heads": 2, "low_rank_dim": 0}, "low_rank_dim must be"),
    ],
)
def test_bad_sizes_are_a_clear_error(cls: type, args: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(depth=1, **args)


# --- fla's kernels on a GPU -----------------------------------------------------------------------

MEMBERS = [
    (GatedDeltaNetBackbone, {}),
    (RWKV7Backbone, {"low_rank_dim": 8}),
    (MoMBackbone, {}),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's Triton kernels need a GPU")
@pytest.mark.parametrize(("cls", "args"), MEMBERS)
def test_cuda_kernels_match_cpu_reference(cls: type, args: dict) -> None:
    torch.manual_seed(0)
    backbone = cls(d_model=128, depth=2, heads=4, **args).eval()
    x = torch.randn(2, 300, 128)
    with torch.no_grad():
        y_cpu, state_cpu = backbone(x)
        gpu = backbone.cuda()
        y_gpu, state_gpu = gpu(x.cuda())
        _, state = gpu(x[:, :100].cuda())
        steps = []
        for t in range(100, 110):
            y_t, state = gpu.step(x[:, t].cuda(), state=state)
            steps.append(y_t)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(
        state_gpu.memory[-1].cpu(), state_cpu.memory[-1], atol=1e-3, rtol=1e-3
    )
    torch.testing.assert_close(torch.stack(steps, 1).cpu(), y_cpu[:, 100:110], atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's Triton kernels need a GPU")
def test_cuda_mixers_are_fla_layers() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 300, 128, device="cuda")
    gdn = first_attn(GatedDeltaNetBackbone(d_model=128, depth=1, heads=4)).cuda()
    conv = torch.zeros(2, 2 * gdn.key_dim + gdn.value_dim, gdn.conv_size - 1, device="cuda")
    torch.testing.assert_close(
        gated_deltanet_mix(gdn, x, conv, None)[0], gdn(x)[0], atol=1e-3, rtol=1e-3
    )
    rwkv = first_attn(RWKV7Backbone(d_model=128, depth=2, heads=4)).cuda()
    shift = torch.zeros(2, 128, device="cuda")
    torch.testing.assert_close(
        rwkv7_mix(rwkv, x, shift, None, None)[0], rwkv(x)[0], atol=1e-3, rtol=1e-3
    )
