"""Linear attention mixers against their textbook quadratic forms, and fla's kernels on CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from backbones import linear_attention
from backbones._fla_ops import fla
from backbones.linear_attention import (
    GATE_LOGIT_NORMALIZER,
    NORMALIZER_EPS,
    LinearAttentionBackbone,
    LinearAttentionMixer,
    SimpleGLABackbone,
)
from backbones.presets import PRESET_DIR, load_preset

D_MODEL, HEADS = 16, 2


def split_heads(mixer: LinearAttentionMixer, x: torch.Tensor):
    qk, v = mixer.qkv_proj(x).split([2 * mixer.heads * mixer.d_key, D_MODEL], -1)
    q, k = qk.view(*x.shape[:2], 2, mixer.heads, mixer.d_key).unbind(2)
    return q, k, v.view(*x.shape[:2], mixer.heads, mixer.d_head)


def test_plain_mixer_is_katharopoulos_linear_attention() -> None:
    """o_i = sum_{j<=i} phi(q_i).phi(k_j) v_j / (sum_{j<=i} phi(q_i).phi(k_j) + eps), phi = elu + 1."""
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(d_model=D_MODEL, heads=HEADS, d_key=D_MODEL // HEADS, gated=False)
    x = torch.randn(2, 70, D_MODEL)  # longer than one chunk of fla's chunked form
    q, k, v = split_heads(mixer, x)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    scale = mixer.d_key**-0.5
    scores = torch.einsum("bihd,bjhd->bhij", q, k).tril() * scale
    o = torch.einsum("bhij,bjhd->bihd", scores, v) / (
        scores.sum(-1).transpose(1, 2).unsqueeze(-1) + NORMALIZER_EPS
    )
    expected = mixer.out_proj(o.flatten(2))
    torch.testing.assert_close(mixer(x, None)[0], expected, atol=1e-5, rtol=1e-5)


def test_gated_mixer_is_decayed_linear_attention() -> None:
    """o_i = sum_{j<=i} (q_i.k_j / sqrt(d_key)) prod_{j<l<=i} a_l v_j, then RMSNorm and swish gate."""
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(d_model=D_MODEL, heads=HEADS, d_key=4, gated=True)
    x = torch.randn(2, 70, D_MODEL)
    q, k, v = split_heads(mixer, x)
    log_decay = F.logsigmoid(mixer.decay_proj(x)) / GATE_LOGIT_NORMALIZER  # [B, T, H]
    cumulative = log_decay.cumsum(1).transpose(1, 2)  # [B, H, T]
    decay = (cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)).tril().exp().tril()
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * mixer.d_key**-0.5 * decay
    o = torch.einsum("bhij,bjhd->bihd", scores, v)
    expected = mixer.out_proj(mixer.head_norm(o).flatten(2) * F.silu(mixer.gate_proj(x)))
    torch.testing.assert_close(mixer(x, None)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [LinearAttentionBackbone, SimpleGLABackbone])
def test_state_is_a_fixed_size_matrix_memory(cls) -> None:
    torch.manual_seed(0)
    backbone = cls(d_model=D_MODEL, depth=2, heads=HEADS)
    _, state = backbone(torch.randn(3, 100, D_MODEL))
    d_value = D_MODEL // HEADS + (0 if backbone.gated else 1)
    expected = (3, HEADS, backbone.d_key, d_value)
    assert [m.shape for m in state.memory] == [expected, expected]
    assert all(m.dtype == torch.float32 for m in state.memory)


def test_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match="heads=3 must divide d_model=16"):
        SimpleGLABackbone(d_model=16, depth=1, heads=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's Triton kernels need a GPU")
@pytest.mark.parametrize("cls", [LinearAttentionBackbone, SimpleGLABackbone])
def test_cuda_kernels_match_cpu_reference(cls) -> None:
    torch.manual_seed(0)
    backbone = cls(d_model=128, depth=2, heads=4).eval()
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


# --- fla's kernels on 16-bit inputs: even key and value widths, on CPU ---------------------------

LINEAR_PRESETS = sorted(
    p for name in ("linear_attention", "simple_gla") for p in PRESET_DIR.glob(f"{name}-*.yaml")
)
TUNED_WIDTHS = range(8, 513, 8)
"""What `sweeps/tune.py`'s `widest_within_budget` can choose: multiples of 8 (the preset's heads
and depth kept; a budget four times the largest preset's stays below 512)."""


@pytest.fixture
def kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """fla's kernel path taken by CPU tensors: every call records `(op, K, V)`, checks what the
    Triton kernels check in 16-bit (even K and V), and runs the reference op with the kernel
    call's arguments (so the padding and the scale passed to the kernels are exercised)."""
    calls: list[tuple[str, int, int]] = []
    naive = fla("fla.ops.simple_gla.naive")

    def recorder(name: str):
        def op(q, k, v, *, g, scale, initial_state, output_final_state):
            K, V = k.shape[-1], v.shape[-1]
            calls.append((name, K, V))
            assert q.shape[-1] == K and K % 2 == 0 and V % 2 == 0, (name, K, V)
            assert initial_state is None or initial_state.shape[-2:] == (K, V)
            g = q.new_zeros(q.shape[:3]) if g is None else g
            if name == "fused_recurrent":
                return naive.naive_recurrent_simple_gla(
                    q, k, v, g, scale=scale, initial_state=initial_state
                )
            return naive.naive_chunk_simple_gla(
                q,
                k,
                v,
                g,
                scale=scale,
                initial_state=initial_state,
                output_final_state=output_final_state,
                chunk_size=min(linear_attention.CHUNK_SIZE, q.shape[1]),
            )

        return op

    monkeypatch.setattr(linear_attention, "uses_kernels", lambda t: True)
    kernels = fla("fla.ops.simple_gla")
    monkeypatch.setattr(kernels, "chunk_simple_gla", recorder("chunk"))
    monkeypatch.setattr(kernels, "fused_recurrent_simple_gla", recorder("fused_recurrent"))
    return calls


@pytest.mark.parametrize("path", LINEAR_PRESETS, ids=lambda p: p.stem)
def test_kernel_widths_are_even_and_padding_is_exact_at_every_preset(
    path: Path, kernels_on_cpu: list[tuple[str, int, int]]
) -> None:
    """Every preset through the kernel path (chunked forward, carried memory, one step) gives the
    reference path's numbers, with even widths at every fla call."""
    torch.manual_seed(0)
    backbone = load_preset(path).eval()
    x = torch.randn(2, 70, backbone.d_model)
    with torch.no_grad():
        kernels = backbone(x[:, :40])
        kernels = (kernels, backbone(x[:, 40:], state=kernels[1]))
        step = backbone.step(x[:, 0], state=backbone.init_state(2))
    assert {name for name, _, _ in kernels_on_cpu} == {"chunk", "fused_recurrent"}
    with pytest.MonkeyPatch.context() as m:  # the reference ops, no padding
        m.setattr(linear_attention, "uses_kernels", lambda t: False)
        with torch.no_grad():
            reference = backbone(x[:, :40])
            reference = (reference, backbone(x[:, 40:], state=reference[1]))
            reference_step = backbone.step(x[:, 0], state=backbone.init_state(2))
    for (y, state), (y_ref, state_ref) in zip(kernels, reference, strict=True):
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        for memory, memory_ref in zip(state.memory, state_ref.memory, strict=True):
            assert memory.shape == memory_ref.shape  # the padding never reaches the state
            torch.testing.assert_close(memory, memory_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[0], reference_step[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", LINEAR_PRESETS, ids=lambda p: p.stem)
def test_kernel_widths_are_even_over_the_tuning_space(
    path: Path, kernels_on_cpu: list[tuple[str, int, int]]
) -> None:
    """The tuner keeps a preset's heads and scales `d_model` in multiples of 8, so a head width
    (and simple GLA's half-width keys) can be odd: the kernels still get even widths."""
    preset = yaml.safe_load(path.read_text())
    cls = {c.__name__: c for c in (LinearAttentionBackbone, SimpleGLABackbone)}[
        preset["class_path"].rsplit(".", 1)[1]
    ]
    heads = preset["init_args"]["heads"]
    odd = set()
    for d_model in (w for w in TUNED_WIDTHS if w % heads == 0):
        backbone = cls(d_model=d_model, depth=1, heads=heads, ff_mult=1)
        d_value = backbone.d_head + (0 if backbone.gated else 1)
        if backbone.d_key % 2 or d_value % 2:
            odd.add(d_model)
        x = torch.randn(1, 2, d_model)
        kernels_on_cpu.clear()
        with torch.no_grad():
            _, state = backbone(x)
            backbone.step(x[:, 0], state=state)
        assert [name for name, _, _ in kernels_on_cpu] == ["chunk", "fused_recurrent"]
    # the plain member's value width (head width + the normaliser) is odd wherever the head width
    # is even: without the padding most of its tuning space would fail in 16-bit
    assert odd or cls.gated


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's Triton kernels need a GPU")
@pytest.mark.parametrize("cls", [LinearAttentionBackbone, SimpleGLABackbone])
@pytest.mark.parametrize("d_model", [64, 72, 24])  # V odd; simple GLA's K odd; head width 3
def test_cuda_kernels_train_in_bf16(cls, d_model: int) -> None:
    """A backward through fla's kernels under bf16 autocast, at widths whose natural K or V is
    odd (fla asserts even ones in 16-bit), close to the fp32 gradients."""
    torch.manual_seed(0)
    backbone = cls(d_model=d_model, depth=2, heads=8 if d_model == 24 else 4).cuda()
    x = torch.randn(2, 130, d_model, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, _ = backbone(x)
    y.float().square().mean().backward()
    grads = {n: p.grad.clone() for n, p in backbone.named_parameters()}
    backbone.zero_grad()
    backbone(x)[0].square().mean().backward()
    for name, p in backbone.named_parameters():
        assert torch.isfinite(grads[name]).all(), name
        scale = p.grad.abs().max().item() + 1e-6
        torch.testing.assert_close(grads[name], p.grad, atol=0.1 * scale, rtol=0, msg=name)
