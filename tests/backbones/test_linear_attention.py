"""Linear attention mixers against their textbook quadratic forms, and fla's kernels on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbones.linear_attention import (
    GATE_LOGIT_NORMALIZER,
    NORMALIZER_EPS,
    LinearAttentionBackbone,
    LinearAttentionMixer,
    SimpleGLABackbone,
)

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
