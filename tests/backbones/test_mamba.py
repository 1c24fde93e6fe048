"""Mamba and Mamba2: the CPU scans against mamba-ssm's references and a plain recurrence, the mixers
against mamba-ssm's own module `forward` / `step`, and the GPU kernels against the CPU path.

The contract equivalences (chunked == full, step loop == full, gradients) run for both members in
`test_registry.py` at their tiny presets; here they run at the edges the presets do not reach.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from backbones import _mamba_ops
from backbones._mamba_ops import (
    Mamba,
    Mamba2,
    rms_norm_ref,
    selective_scan_cpu,
    selective_scan_ref,
    ssd_scan_cpu,
)
from backbones.base import Backbone
from backbones.mamba import MambaBackbone
from backbones.mamba2 import Mamba2Backbone

# mamba-ssm's modules import only once `backbones._mamba_ops` stands in for its missing extension
mamba_simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
mamba2_module = importlib.import_module("mamba_ssm.modules.mamba2")
layernorm_gated = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")

ATOL = 1e-5


def randn(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale + shift).requires_grad_(True)


def grads(output: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(3))
    return list(torch.autograd.grad((output * weight).sum(), inputs))


def assert_all_close(actual: list[torch.Tensor], expected: list[torch.Tensor], rtol: float) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=rtol * e.abs().max().item(), rtol=0)


# --- Mamba (v1): selective scan -----------------------------------------------------------------


def scan_inputs(b: int = 2, d: int = 6, n: int = 4, length: int = 23, decay: float = 1.0):
    torch.manual_seed(0)
    return dict(
        u=randn(b, d, length),
        delta=randn(b, d, length, shift=-1.0),
        A=(-torch.rand(d, n) * 4 * decay - 0.1).requires_grad_(True),
        B=randn(b, n, length),
        C=randn(b, n, length),
        D=randn(d),
        z=randn(b, d, length),
        delta_bias=randn(d, scale=0.5),
    )


@pytest.mark.parametrize(
    ("chunk_size", "block_size"),
    [
        *[(None, None), (1, None), (4, None), (7, None), (23, None), (64, None)],  # lanes
        *[(None, 1), (None, 5), (4, 3), (7, 2), (23, 22)],  # blocks, within lanes
    ],
)
def test_cpu_scan_equals_selective_scan_ref(chunk_size: int | None, block_size: int | None) -> None:
    """Any lanes (`chunk_size` steps each, padded) and blocks of steps: the same result."""
    kw = scan_inputs()
    out, last = selective_scan_cpu(
        **kw, delta_softplus=True, chunk_size=chunk_size, block_size=block_size
    )
    ref, ref_last = selective_scan_ref(**kw, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(last, ref_last, atol=ATOL, rtol=0)
    inputs = list(kw.values())
    assert_all_close(grads(out, inputs), grads(ref, inputs), rtol=1e-5)


def test_cpu_scan_without_optional_inputs_equals_selective_scan_ref() -> None:
    kw = scan_inputs()
    core = {k: kw[k] for k in ("u", "A", "B", "C")}
    core["delta"] = F.softplus(kw["delta"].detach()).requires_grad_(True)  # no softplus inside
    out, _ = selective_scan_cpu(**core, chunk_size=5)
    ref = selective_scan_ref(**core)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    assert_all_close(grads(out, list(core.values())), grads(ref, list(core.values())), rtol=1e-5)


def test_cpu_scan_is_stable_for_vanishing_decays() -> None:
    """Per-step decays of exp(-1000): no exp(-cumsum) overflow, still equal to the plain loop."""
    kw = scan_inputs(decay=100.0)
    kw["delta"] = (kw["delta"].detach() + 4.0).requires_grad_(True)
    out, last = selective_scan_cpu(**kw, delta_softplus=True, chunk_size=8, block_size=3)
    ref, ref_last = selective_scan_ref(**kw, delta_softplus=True, return_last_state=True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(last, ref_last, atol=1e-4, rtol=1e-5)
    for g in grads(out, list(kw.values())):
        assert torch.isfinite(g).all()


def plain_recurrence(u, delta, A, B, C, h):
    """`h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t`, `y_t = C_t . h_t`, one step at a time."""
    ys = []
    for t in range(u.shape[-1]):
        h = (
            torch.exp(delta[..., t, None] * A) * h
            + (delta[..., t] * u[..., t])[..., None] * B[:, None, :, t]
        )
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, -1), h


@pytest.mark.parametrize(("chunk_size", "block_size"), [(None, None), (6, None), (None, 4), (6, 4)])
def test_cpu_scan_carries_initial_and_last_state_with_gradients(
    chunk_size: int | None, block_size: int | None
) -> None:
    kw = scan_inputs()
    u, delta, A, B, C = (kw[k] for k in ("u", "delta", "A", "B", "C"))
    delta = F.softplus(delta)
    h0 = randn(u.shape[0], u.shape[1], A.shape[1])
    out, last = selective_scan_cpu(
        u, delta, A, B, C, initial_state=h0, chunk_size=chunk_size, block_size=block_size
    )
    ref, ref_last = plain_recurrence(u, delta, A, B, C, h0)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(last, ref_last, atol=ATOL, rtol=0)
    inputs = [u, kw["delta"], A, B, C, h0]
    loss = out.sum() + (last * torch.linspace(-1, 1, last.shape[-1])).sum()
    ref_loss = ref.sum() + (ref_last * torch.linspace(-1, 1, last.shape[-1])).sum()
    assert_all_close(
        list(torch.autograd.grad(loss, inputs, retain_graph=True)),
        list(torch.autograd.grad(ref_loss, inputs)),
        rtol=1e-5,
    )


# --- Mamba2: SSD ------------------------------------------------------------------------------


def naive_ssd(x, dt, A, B, C, D, dt_bias, h):
    """Mamba2's recurrence one step at a time: scalar decay per head, B and C shared per group."""
    dt = F.softplus(dt + dt_bias)
    heads_per_group = x.shape[2] // B.shape[2]
    B, C = B.repeat_interleave(heads_per_group, 2), C.repeat_interleave(heads_per_group, 2)
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        h = decay * h + torch.einsum("bh,bhn,bhp->bhpn", dt[:, t], B[:, t], x[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), h


@pytest.mark.parametrize(
    ("length", "ngroups", "chunk_size"), [(19, 1, 4), (16, 2, 8), (5, 2, 8), (70, 1, None)]
)
def test_cpu_ssd_equals_plain_recurrence(length: int, ngroups: int, chunk_size: int | None) -> None:
    torch.manual_seed(0)
    b, heads, p, n = 2, 4, 3, 5
    x, dt = randn(b, length, heads, p), randn(b, length, heads, shift=-1.0)
    B, C = randn(b, length, ngroups, n), randn(b, length, ngroups, n)
    A, D = (-torch.rand(heads) * 4).requires_grad_(True), randn(heads)
    dt_bias, h0 = randn(heads, scale=0.5), randn(b, heads, p, n)
    y, last = ssd_scan_cpu(
        x, dt, A, B, C, chunk_size=chunk_size, D=D, dt_bias=dt_bias, initial_state=h0
    )
    ref, ref_last = naive_ssd(x, dt, A, B, C, D, dt_bias, h0)
    torch.testing.assert_close(y, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(last, ref_last, atol=ATOL, rtol=0)
    inputs = [x, dt, A, B, C, D, dt_bias, h0]
    assert_all_close(grads(y, inputs), grads(ref, inputs), rtol=1e-4)


# --- the mixers against mamba-ssm's own modules ------------------------------------------------


def test_mamba_mixer_equals_mamba_ssm_forward_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """mamba-ssm's `Mamba.forward` with its reference scan, and its `step` without Triton."""
    monkeypatch.setattr(mamba_simple, "selective_scan_fn", selective_scan_ref)
    monkeypatch.setattr(mamba_simple, "selective_state_update", None)
    torch.manual_seed(0)
    backbone = MambaBackbone(d_model=8, depth=1, d_state=4, d_conv=3)
    mixer: Mamba = backbone.layers[0].mixer
    x = torch.randn(2, 9, 8)
    state = backbone.init_state(2)
    y, conv_state, ssm_state = backbone._mix(mixer, x, state.conv_state[0], state.ssm_state[0])
    torch.testing.assert_close(y, mixer(x), atol=ATOL, rtol=0)

    conv_cache, ssm_cache = mixer.allocate_inference_cache(2, 1)  # mamba-ssm keeps d_conv inputs
    conv_cache[..., 1:] = conv_state
    ssm_cache.copy_(ssm_state)
    x_t = torch.randn(2, 8)
    ours, _, ours_ssm = backbone._mix_step(mixer, x_t, conv_state, ssm_state)
    theirs, _, _ = mixer.step(x_t[:, None], conv_cache, ssm_cache)
    torch.testing.assert_close(ours, theirs[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_ssm, ssm_cache, atol=ATOL, rtol=0)


def test_mamba2_mixer_equals_mamba_ssm_forward_and_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """mamba-ssm's `Mamba2.forward` (unfused path) with a plain-recurrence scan and the reference
    gated norm, and its `step` without Triton."""

    def chunk_scan(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, **_):
        assert z is None and dt_softplus
        h0 = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1])
        return naive_ssd(x, dt, A, B, C, D, dt_bias, h0)[0]

    def gated_norm(x, weight, bias, z, eps, group_size, norm_before_gate):
        return rms_norm_ref(x, weight, bias, z, eps, group_size, norm_before_gate)

    monkeypatch.setattr(mamba2_module, "mamba_chunk_scan_combined", chunk_scan)
    monkeypatch.setattr(mamba2_module, "selective_state_update", None)
    monkeypatch.setattr(layernorm_gated, "rmsnorm_fn", gated_norm)
    torch.manual_seed(0)
    backbone = Mamba2Backbone(d_model=8, depth=1, d_state=4, headdim=4, chunk_size=4)
    mixer: Mamba2 = backbone.layers[0].mixer
    mixer.use_mem_eff_path = False
    x = torch.randn(2, 9, 8)
    state = backbone.init_state(2)
    y, conv_state, ssm_state = backbone._mix(mixer, x, state.conv_state[0], state.ssm_state[0])
    torch.testing.assert_close(y, mixer(x), atol=ATOL, rtol=0)

    conv_cache, ssm_cache = mixer.allocate_inference_cache(2, 1)
    conv_cache[..., 1:] = conv_state
    ssm_cache.copy_(ssm_state)
    x_t = torch.randn(2, 8)
    ours, _, ours_ssm = backbone._mix_step(mixer, x_t, conv_state, ssm_state)
    theirs, _, _ = mixer.step(x_t[:, None], conv_cache, ssm_cache)
    torch.testing.assert_close(ours, theirs[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_ssm, ssm_cache, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", [MambaBackbone, Mamba2Backbone])
def test_parameters_are_mamba_ssm_module_parameters(cls: type) -> None:
    """A checkpoint's mixer weights are a mamba-ssm module's state dict (CPU <-> GPU, and interop)."""
    backbone = cls(d_model=16, depth=2, d_state=8)
    module_cls = Mamba if cls is MambaBackbone else Mamba2
    for layer in backbone.layers:
        assert type(layer.mixer) is module_cls
    reference = module_cls(
        **{"d_model": 16, "d_state": 8} | ({} if cls is MambaBackbone else {"headdim": 32})
    )
    mixer_state = backbone.layers[1].mixer.state_dict()
    assert {k: v.shape for k, v in mixer_state.items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


# --- the backbones at the edges the presets do not reach ----------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: MambaBackbone(d_model=8, depth=2, d_state=4, d_conv=4),
        lambda: MambaBackbone(d_model=8, depth=1, d_state=4, d_conv=1, expand=1),
        lambda: Mamba2Backbone(d_model=8, depth=2, d_state=4, headdim=4, ngroups=2, chunk_size=3),
    ],
    ids=["mamba", "mamba-no-conv-history", "mamba2-groups"],
)
def test_chunks_shorter_than_the_conv_and_steps_equal_forward(make: Callable[[], Backbone]) -> None:
    torch.manual_seed(0)
    backbone = make().eval()
    x = torch.randn(2, 13, 8)
    with torch.no_grad():
        y, final = backbone(x)
        state, parts = backbone.init_state(2), []
        for start, stop in [(0, 1), (1, 3), (3, 4), (4, 13)]:  # chunks of 1 and 2 < d_conv - 1
            y_part, state = backbone(x[:, start:stop], state=state)
            parts.append(y_part)
        torch.testing.assert_close(torch.cat(parts, 1), y, atol=ATOL, rtol=0)
        torch.testing.assert_close(state.ssm_state, final.ssm_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(state.conv_state, final.conv_state, atol=ATOL, rtol=0)
        state, steps = backbone.init_state(2), []
        for t in range(x.shape[1]):
            y_t, state = backbone.step(x[:, t], state=state)
            steps.append(y_t)
        torch.testing.assert_close(torch.stack(steps, 1), y, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls", [MambaBackbone, Mamba2Backbone])
def test_bf16_autocast_keeps_the_ssm_in_float32(cls: type) -> None:
    """Mixed-precision training: projections in bf16, scans and SSM states in float32."""
    torch.manual_seed(0)
    backbone = cls(d_model=16, depth=2, d_state=8)
    x = torch.randn(2, 24, 16)
    y, state = backbone(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf16, state_bf16 = backbone(x)
        y_t, step_state = backbone.step(x[:, 0], state=backbone.init_state(2))
    assert state_bf16.ssm_state.dtype == step_state.ssm_state.dtype == torch.float32
    torch.testing.assert_close(y_bf16.float(), y, atol=0.1, rtol=0.05)
    torch.testing.assert_close(y_t.float(), y[:, 0], atol=0.1, rtol=0.05)
    torch.testing.assert_close(state_bf16.ssm_state, state.ssm_state, atol=0.1, rtol=0.05)


def test_invalid_sizes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="headdim=12 must divide expand \\* d_model = 16"):
        Mamba2Backbone(d_model=8, depth=1, headdim=12)
    with pytest.raises(ValueError, match="ngroups=3 must divide the number of heads 4"):
        Mamba2Backbone(d_model=8, depth=1, headdim=4, ngroups=3)
    with pytest.raises(ValueError, match="mamba: depth must be >= 1, got 0"):
        MambaBackbone(d_model=8, depth=0)


# --- a GPU run without mamba-ssm's kernels: loud, or refused --------------------------------------


@pytest.fixture
def claims_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor claims CUDA, the kernels are missing, and the once-per-process warning is fresh."""
    monkeypatch.setattr(_mamba_ops, "is_cuda", lambda t: True)
    monkeypatch.setattr(_mamba_ops, "HAS_SELECTIVE_SCAN_CUDA", False)
    monkeypatch.setattr(_mamba_ops, "_WARNED", set())
    monkeypatch.delenv(_mamba_ops.REFUSE_CPU_FALLBACK_ENV, raising=False)


@pytest.mark.usefixtures("claims_cuda")
def test_cpu_fallback_on_cuda_warns_once() -> None:
    kw = scan_inputs()
    expected, _ = selective_scan_cpu(**kw, delta_softplus=True)
    with pytest.warns(RuntimeWarning, match=r"selective_scan_cuda.*ZOO_REFUSE_CPU_FALLBACK=1"):
        out, _ = _mamba_ops.selective_scan(**kw, delta_softplus=True)
    torch.testing.assert_close(out, expected)  # it still runs, on the CPU path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call is quiet
        _mamba_ops.selective_scan(**kw, delta_softplus=True)


@pytest.mark.usefixtures("claims_cuda")
def test_cpu_fallback_on_cuda_is_refused_by_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_mamba_ops.REFUSE_CPU_FALLBACK_ENV, "1")
    with pytest.raises(_mamba_ops.CPUFallbackError, match=r"selective_scan_cuda.*refused"):
        _mamba_ops.selective_scan(**scan_inputs(), delta_softplus=True)


def test_cpu_tensors_take_the_cpu_path_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_mamba_ops.REFUSE_CPU_FALLBACK_ENV, "1")  # CPU tensors are no fallback
    monkeypatch.setattr(_mamba_ops, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _mamba_ops.selective_scan(**scan_inputs(), delta_softplus=True)


# --- GPU: mamba-ssm's kernels against the CPU path ---------------------------------------------


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU with mamba-ssm's kernels"
)
@pytest.mark.parametrize(
    "make",
    [
        lambda: MambaBackbone(d_model=32, depth=2, d_state=16),
        lambda: Mamba2Backbone(d_model=32, depth=2, d_state=16, headdim=16, chunk_size=16),
    ],
    ids=["mamba", "mamba2"],
)
def test_gpu_kernels_equal_cpu_path(
    make: Callable[[], Backbone], monkeypatch: pytest.MonkeyPatch
) -> None:
    # without mamba-ssm's kernels the "GPU" side would be the CPU scan compared with itself
    monkeypatch.setenv(_mamba_ops.REFUSE_CPU_FALLBACK_ENV, "1")
    torch.manual_seed(0)
    cpu = make()
    gpu = make().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 70, 32)
    y_cpu, state_cpu = cpu(x)
    y_cpu.square().mean().backward()
    y_gpu, state_gpu = gpu(x.cuda())
    y_gpu.square().mean().backward()
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(state_gpu.ssm_state.cpu(), state_cpu.ssm_state, atol=1e-3, rtol=1e-3)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        scale = p_cpu.grad.abs().max().item()
        torch.testing.assert_close(
            p_gpu.grad.cpu(), p_cpu.grad, atol=1e-2 * scale, rtol=0, msg=name
        )
    with torch.no_grad():  # chunked with carried state, and steps, through the kernels
        y_head, state = gpu(x[:, :33].cuda())
        y_tail, _ = gpu(x[:, 33:].cuda(), state=state)
        torch.testing.assert_close(
            torch.cat([y_head, y_tail], 1).cpu(), y_cpu, atol=1e-3, rtol=1e-3
        )
        state, steps = gpu.init_state(2, device="cuda"), []
        for t in range(8):
            y_t, state = gpu.step(x[:, t].cuda(), state=state)
            steps.append(y_t)
        torch.testing.assert_close(
            torch.stack(steps, 1).cpu(), y_cpu[:, :8].detach(), atol=1e-3, rtol=1e-3
        )
