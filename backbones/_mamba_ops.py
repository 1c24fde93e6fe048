"""mamba-ssm on every device: its modules and CUDA/Triton kernels on a GPU, exact PyTorch scans on CPU.

`import mamba_ssm` fails when the package was built without its compiled `selective_scan_cuda`
extension (every CPU install). We register a placeholder for that one extension before importing,
so that mamba-ssm's own `Mamba` and `Mamba2` modules (their parameters, names and initialisation)
load everywhere; anything that would call the missing extension is routed to the CPU scans below.

Both scans take an initial state and return the final one, so a sequence can be processed in
chunks with a carried state; the GPU kernels are used where they exist (`x.is_cuda`).

A CUDA tensor with no `selective_scan_cuda` (mamba-ssm installed without its kernels, e.g. by a CPU
set-up) would take Mamba v1's per-token Python scan: orders of magnitude slower. That warns loudly,
once per process; with the environment variable `ZOO_REFUSE_CPU_FALLBACK=1` it raises instead
(`CPUFallbackError`), for GPU runs that must not crawl silently (`bench/gpu_check.sh` sets it).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor


class _MissingExtension(types.ModuleType):
    """Stands in for a compiled extension that this install lacks; any use says so."""

    def __getattr__(self, attr: str) -> object:
        raise AttributeError(
            f"{self.__name__}.{attr}: mamba-ssm was installed without its CUDA kernels; "
            "reinstall it on a GPU machine (pip install icrl-zoo[gpu]) to use them"
        )


HAS_SELECTIVE_SCAN_CUDA = importlib.util.find_spec("selective_scan_cuda") is not None
REFUSE_CPU_FALLBACK_ENV = "ZOO_REFUSE_CPU_FALLBACK"
"""Set to 1: a CUDA tensor that would take a CPU fallback path raises instead of warning."""
if not HAS_SELECTIVE_SCAN_CUDA and "selective_scan_cuda" not in sys.modules:
    sys.modules["selective_scan_cuda"] = _MissingExtension("selective_scan_cuda")

from backbones._selective_scan import selective_scan_cpu  # noqa: E402

MAMBA_SSM = {
    "Mamba": "mamba_ssm.modules.mamba_simple",
    "Mamba2": "mamba_ssm.modules.mamba2",
    "selective_scan_fn": "mamba_ssm.ops.selective_scan_interface",
    "selective_scan_ref": "mamba_ssm.ops.selective_scan_interface",
    "rms_norm_ref": "mamba_ssm.ops.triton.layernorm_gated",
    "selective_state_update": "mamba_ssm.ops.triton.selective_state_update",
    "mamba_chunk_scan_combined": "mamba_ssm.ops.triton.ssd_combined",
}
"""What the zoo takes from mamba-ssm, by the module that defines it."""


def mamba_ssm(name: str) -> Any:
    """mamba-ssm's `name` (one of `MAMBA_SSM`), imported when a Mamba is first built or run:
    mamba-ssm imports Hugging Face transformers, seconds of a process's start, which a process that
    never builds a Mamba (a transformer's trial, a report) should not pay (BENCHMARKS.md, "Process
    start-up")."""
    return getattr(importlib.import_module(MAMBA_SSM[name]), name)


def __getattr__(name: str) -> Any:
    """`from backbones._mamba_ops import Mamba` (and the other `MAMBA_SSM` names) still works."""
    if name in MAMBA_SSM:
        return mamba_ssm(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:  # optional even on a GPU
    from causal_conv1d import causal_conv1d_fn
except ImportError:
    causal_conv1d_fn = None

__all__ = [
    "MAMBA_SSM",
    "causal_conv",
    "conv_history",
    "conv_step",
    "gated_rms_norm",
    "mamba_ssm",
    "selective_scan",
    "selective_scan_cpu",
    "selective_state_step",
    "ssd_scan",
    "ssd_scan_cpu",
    "ssd_state_step",
]


class CPUFallbackError(RuntimeError):
    """A GPU run would take a CPU fallback path, and `ZOO_REFUSE_CPU_FALLBACK=1` refuses it."""


_WARNED: set[str] = set()


def is_cuda(t: Tensor) -> bool:
    """Whether `t` is on a CUDA device (a function of its own: a CPU test makes a tensor claim it)."""
    return t.is_cuda


def cpu_fallback(what: str, missing: str) -> None:
    """A CUDA tensor is about to run `what` through the pure-PyTorch CPU path because `missing` is
    not installed: warn once per process, or raise with `ZOO_REFUSE_CPU_FALLBACK=1`."""
    message = (
        f"{what} on CUDA tensors runs the per-token Python scan (the CPU path, orders of "
        f"magnitude slower) because mamba-ssm's `{missing}` extension is not installed: reinstall "
        "mamba-ssm with its kernels (ZOO_GPU=1 scripts/setup.sh)"
    )
    if os.environ.get(REFUSE_CPU_FALLBACK_ENV, "0") not in ("", "0"):
        raise CPUFallbackError(f"{message}; refused ({REFUSE_CPU_FALLBACK_ENV} is set)")
    if what not in _WARNED:
        _WARNED.add(what)
        warnings.warn(
            f"{message}; set {REFUSE_CPU_FALLBACK_ENV}=1 to refuse", RuntimeWarning, stacklevel=3
        )


# ---------------------------------------------------------------------------------------------
# Short causal convolution with a carried input history
# ---------------------------------------------------------------------------------------------


def causal_conv(x: Tensor, history: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """SiLU(depthwise causal conv) of `x: [B, C, L]` preceded by `history: [B, C, W-1]`.

    Returns `[B, C, L]`; the new history is the last `W-1` columns of `cat(history, x)`.
    """
    x_cat = torch.cat([history.to(x.dtype), x], dim=-1)
    if x.is_cuda and causal_conv1d_fn is not None:
        y = causal_conv1d_fn(x_cat, rearrange(weight, "c 1 w -> c w"), bias, activation="silu")
    else:
        y = F.silu(F.conv1d(x_cat, weight, bias, groups=weight.shape[0]))
    return y[..., -x.shape[-1] :]


def conv_history(history: Tensor, x: Tensor) -> Tensor:
    """The last `W - 1` columns of `cat(history [B, C, W-1], x [B, C, L])`: the next conv state."""
    both = torch.cat([history.to(x.dtype), x], dim=-1)
    return both[..., both.shape[-1] - history.shape[-1] :]


def conv_step(conv: torch.nn.Conv1d, history: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor]:
    """SiLU(causal depthwise conv) for one column `x_t: [B, C]`. Returns `(y_t, new_history)`."""
    window = torch.cat([history.to(x_t.dtype), x_t[..., None]], dim=-1)  # [B, C, W]
    y = (window * conv.weight[:, 0]).sum(-1)
    if conv.bias is not None:
        y = y + conv.bias
    return F.silu(y), window[..., 1:]


# ---------------------------------------------------------------------------------------------
# Mamba (v1): selective scan
# ---------------------------------------------------------------------------------------------


def _selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """mamba-ssm's CUDA selective scan; it has no initial state, so that term is added here.

    The kernel passes no gradient into its returned last state (its documented limitation).
    """
    if initial_state is None:
        return mamba_ssm("selective_scan_fn")(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True
        )
    y, last = mamba_ssm("selective_scan_fn")(
        u, delta, A, B, C, D, None, delta_bias, delta_softplus, return_last_state=True
    )
    dt = delta.float() + (0.0 if delta_bias is None else delta_bias.float()[:, None])
    dt = F.softplus(dt) if delta_softplus else dt
    decay = torch.exp(dt.cumsum(-1)[:, :, None, :] * A.float()[..., None])  # [b, d, n, l]
    h0 = initial_state.float()
    y = y + torch.einsum("bdnl,bdn,bnl->bdl", decay, h0, C.float()).to(y.dtype)
    last = last + decay[..., -1] * h0
    if z is not None:
        y = y * F.silu(z)
    return y, last


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Selective scan with a carried state: the CUDA kernel on a GPU, `selective_scan_cpu` otherwise."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    if is_cuda(u):
        if HAS_SELECTIVE_SCAN_CUDA:
            return _selective_scan_cuda(*args)
        cpu_fallback("mamba's selective scan", "selective_scan_cuda")
    return selective_scan_cpu(*args)


@torch.autocast("cpu", enabled=False)  # full precision as in mamba-ssm's kernels
def selective_state_step(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    dt_bias: Tensor,
) -> tuple[Tensor, Tensor]:
    """One token of the selective scan (softplus on `dt + dt_bias`). Returns `(y, new_state)`.

    `state: [b, d, n]`, `x, dt, z: [b, d]`, `B, C: [b, n]`; `state` is not modified.
    """
    if x.is_cuda:
        new_state = state.clone()  # the Triton kernel updates in place
        y = mamba_ssm("selective_state_update")(
            new_state, x, dt, A, B, C, D, z=z, dt_bias=dt_bias, dt_softplus=True
        )
        return y, new_state
    dt = F.softplus(dt + dt_bias)
    new_state = torch.exp(dt[..., None] * A) * state + (dt * x)[..., None] * B[:, None, :]
    y = torch.einsum("bdn,bn->bd", new_state, C) + D * x
    return y * F.silu(z), new_state


# ---------------------------------------------------------------------------------------------
# Mamba2: state-space duality (SSD)
# ---------------------------------------------------------------------------------------------


CPU_SSD_CHUNK = 64
"""Chunk length of the CPU SSD (the quadratic form's size): 32 and 64 tie at the 100k preset's
training shapes, 96 and 160 are slower (bench/ssd_cpu.py); 64 loops half as often over a long one."""


@torch.autocast("cpu", enabled=False)  # full precision as in mamba-ssm's kernels
def ssd_scan_cpu(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    *,
    D: Tensor,
    dt_bias: Tensor,
    initial_state: Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """`mamba_chunk_scan_combined` (softplus dt, no z, no dt limit) on CPU: SSD's chunked form.

    Within a chunk of `T` steps the scan is its quadratic ("attention") form,
    `y = (L * C B^T) (dt x)` with `L[i, j] = exp(a_j+1 + ... + a_i)` for `i >= j`, plus the
    carried state read through `C`; the state is then advanced over the chunk. Every product is a
    batched matmul, `C B^T` is computed once per group rather than per head, and chunks are visited
    in order with the state carried (mamba-ssm's `ssd_minimal_discrete` computes the same sums
    with 4-operand einsums over all chunks at once: 1.37x slower here, bench/ssd_cpu.py).

    `x: [b, l, h, p]`, `dt: [b, l, h]`, `A, D, dt_bias: [h]`, `B, C: [b, l, g, n]`,
    `initial_state: [b, h, p, n]`. Returns `(y [b, l, h, p], final_state [b, h, p, n])`.
    `chunk_size` changes speed, not the result; by default `CPU_SSD_CHUNK` steps.
    """
    batch, length, heads, headdim = x.shape
    groups, d_state = B.shape[2], B.shape[3]
    chunk_size = chunk_size or CPU_SSD_CHUNK
    x = x.float()
    dt = F.softplus(dt.float() + dt_bias.float())
    log_decay = rearrange(dt * A.float(), "b l (g k) -> b g k l", g=groups)
    X = rearrange(x * dt[..., None], "b l (g k) p -> b g k l p", g=groups)
    B, C = (rearrange(t.float(), "b l g n -> b g l n") for t in (B, C))
    if initial_state is None:
        state = x.new_zeros(batch, groups, heads // groups, headdim, d_state)
    else:
        state = rearrange(initial_state.float(), "b (g k) p n -> b g k p n", g=groups)
    future = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).triu(1)
    ys = []
    for start in range(0, length, chunk_size):
        stop = min(start + chunk_size, length)
        cum = log_decay[..., start:stop].cumsum(-1)  # [b, g, k, T], non-increasing
        Xc, Bc, Cc = X[..., start:stop, :], B[:, :, start:stop], C[:, :, start:stop]
        mask = future[: stop - start, : stop - start]
        L = torch.exp((cum[..., :, None] - cum[..., None, :]).masked_fill(mask, -torch.inf))
        scores = (Cc @ Bc.transpose(-1, -2))[:, :, None]  # [b, g, 1, T, T]
        carried = torch.exp(cum)[..., None] * (Cc[:, :, None] @ state.transpose(-1, -2))
        ys.append((L * scores) @ Xc + carried)
        # the decay from each step to the chunk's end
        to_end = torch.exp(cum[..., -1:] - cum)[..., None]
        state = torch.exp(cum[..., -1])[..., None, None] * state + (
            (Xc * to_end).transpose(-1, -2) @ Bc[:, :, None]
        )
    y = rearrange(torch.cat(ys, -2), "b g k l p -> b l (g k) p")
    return y + x * D.float()[:, None], rearrange(state, "b g k p n -> b (g k) p n")


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    *,
    chunk_size: int,
    D: Tensor,
    dt_bias: Tensor,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """SSD with a carried state: mamba-ssm's Triton kernel in chunks of `chunk_size` on a GPU,
    `ssd_scan_cpu` in its own (faster there) chunks otherwise."""
    if x.is_cuda:
        return mamba_ssm("mamba_chunk_scan_combined")(
            x,
            dt,
            A,
            B,
            C,
            chunk_size,
            D=D,
            dt_bias=dt_bias,
            initial_states=initial_state,
            dt_softplus=True,
            return_final_states=True,
        )
    return ssd_scan_cpu(x, dt, A, B, C, D=D, dt_bias=dt_bias, initial_state=initial_state)


@torch.autocast("cpu", enabled=False)  # full precision as in mamba-ssm's kernels
def ssd_state_step(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    dt_bias: Tensor,
) -> tuple[Tensor, Tensor]:
    """One token of SSD. `state: [b, h, p, n]`, `x: [b, h, p]`, `dt: [b, h]`, `B, C: [b, g, n]`.

    Returns `(y [b, h, p], new_state)`; `state` is not modified.
    """
    heads, headdim, d_state = state.shape[1:]
    if x.is_cuda:
        new_state = state.clone()  # the Triton kernel updates in place
        y = mamba_ssm("selective_state_update")(
            new_state,
            x,
            repeat(dt, "b h -> b h p", p=headdim),
            repeat(A, "h -> h p n", p=headdim, n=d_state),
            B,
            C,
            repeat(D, "h -> h p", p=headdim),
            dt_bias=repeat(dt_bias, "h -> h p", p=headdim),
            dt_softplus=True,
        )
        return y, new_state
    B, C = (repeat(t, "b g n -> b (g k) n", k=heads // t.shape[1]) for t in (B, C))
    dt = F.softplus(dt + dt_bias)
    decay = torch.exp(dt * A)[..., None, None]
    new_state = decay * state + torch.einsum("bh,bhn,bhp->bhpn", dt, B, x)
    y = torch.einsum("bhpn,bhn->bhp", new_state, C) + D[:, None] * x
    return y, new_state


def gated_rms_norm(norm: torch.nn.Module, y: Tensor, z: Tensor) -> Tensor:
    """Mamba2's gated RMSNorm (`mamba_ssm.ops.triton.layernorm_gated.RMSNorm`) on any device."""
    if y.is_cuda:
        return norm(y, z)
    return mamba_ssm("rms_norm_ref")(
        y,
        norm.weight,
        norm.bias,
        z=z,
        eps=norm.eps,
        group_size=norm.group_size,
        norm_before_gate=norm.norm_before_gate,
    )
