"""Shared by the members built on flash-linear-attention's delta-rule layers (`gated_deltanet`,
`rwkv7`, `mom`): the residual block around an fla layer, the head-width check, and the gated
delta rule routed to fla's Triton kernels on CUDA tensors and to fla's reference ops elsewhere.

These members hold fla's own layer (`fla.layers.GatedDeltaNet`, `RWKV7Attention`, `MomAttention`:
its parameter names, shapes and initialisation) and run its computation from those parameters
with a carried state, as `mamba` and `mamba2` do with mamba-ssm's mixers: an fla layer's
`forward` keeps its state in a transformers-style `Cache` and does not run on CPU.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

import torch
from torch import Tensor, nn


def fla(module: str) -> ModuleType:
    """fla's `module` (e.g. "fla.ops.gated_delta_rule"), imported when a member first runs or
    builds one of its parts: importing fla (Triton's set-up) takes seconds of a process's start,
    which a process that never builds an fla member (a transformer's trial, `zoo collect`, a
    report) should not pay (BENCHMARKS.md, "Process start-up"). fla's warning on a machine without a GPU is
    silenced."""
    found = sys.modules.get(module)
    if found is not None:
        return found
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
        return importlib.import_module(module)


CPU_CHUNK = 16
"""Chunk length of fla's chunked reference op on CPU: changes speed, not the result (of 4 to 64,
16 was the fastest for a training step of `mom` at its 100k preset, and as fast as any for
`gated_deltanet`)."""
L2NORM_EPS = 1e-6  # fla's `l2norm` (what `use_qk_l2norm_in_kernel` applies)


def check_head_widths(name: str, *, d_key: float, d_value: float) -> None:
    """One clear error unless the key and value widths per head are even integers: fla's 16-bit
    backward asserts even head widths, so a model that trains on CPU also trains on a GPU."""
    for what, width in (("key", d_key), ("value", d_value)):
        if width != int(width) or width < 2 or int(width) % 2:
            raise ValueError(
                f"{name}: the {what} width per head must be an even integer (fla's 16-bit "
                f"backward), got {width}"
            )


def l2_normalize(x: Tensor) -> Tensor:
    """`x / sqrt(|x|^2 + eps)` over the last dimension, as fla's `l2norm`."""
    return x * torch.rsqrt(x.float().square().sum(-1, keepdim=True) + L2NORM_EPS).to(x.dtype)


def gated_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, memory: Tensor | None
) -> tuple[Tensor, Tensor]:
    """fla's gated delta rule over `[B, T, H, *]` inputs from `memory` (None: zeros).

    With q and k L2-normalised per head: `S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1}
    + beta_t k_t v_t^T`, read out as `o_t = S_t^T q_t / sqrt(d_key)`; `g: [B, T, H]` is the log
    decay, `beta: [B, T, H]` the write strength in [0, 1], `memory: [B, H, d_key, d_value]`.
    Returns float32 `(o, memory)`. A head with `g = 0` and `beta = 0` at a step leaves its memory
    as it was (what `mom` pads with).
    """
    length = q.shape[1]
    if q.is_cuda:
        kernels = fla("fla.ops.gated_delta_rule")
        op = (
            kernels.fused_recurrent_gated_delta_rule
            if length == 1 and not torch.is_grad_enabled()
            else kernels.chunk_gated_delta_rule
        )
        o, memory = op(
            q=q,
            k=k,
            v=v,
            g=g,
            beta=beta,
            initial_state=memory,
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )
        return o.float(), memory
    q, k = l2_normalize(q), l2_normalize(k)
    naive = fla("fla.ops.gated_delta_rule.naive")
    if length == 1:
        o, memory = naive.naive_recurrent_gated_delta_rule(
            q, k, v, beta, g, initial_state=memory, output_final_state=True
        )
        return o.float(), memory
    return naive.naive_chunk_gated_delta_rule(
        q, k, v, g, beta, chunk_size=CPU_CHUNK, initial_state=memory, output_final_state=True
    )


class Block(nn.Module):
    """Pre-norm residual block around one fla layer (`attn`), then a GELU MLP, named like fla's
    own blocks; the member runs `attn` on `attn_norm(x)` and hands the result to `finish`."""

    def __init__(self, *, attn: nn.Module, d_model: int, ff_mult: float, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model)
        self.attn = attn
        self.mlp_norm = nn.RMSNorm(d_model)
        hidden = round(ff_mult * d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def finish(self, x: Tensor, mixed: Tensor) -> Tensor:
        """`x + mixed`, then the MLP's residual branch (dropout on both)."""
        x = x + self.dropout(mixed)
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


def check_block_sizes(
    name: str, *, d_model: int, depth: int, heads: int, ff_mult: float, dropout: float
) -> None:
    """One clear error for a size below 1, heads that do not divide d_model, an MLP narrower
    than one unit or a dropout outside [0, 1)."""
    for arg, value in (("d_model", d_model), ("depth", depth), ("heads", heads)):
        if value < 1:
            raise ValueError(f"{name}: {arg} must be >= 1, got {value}")
    if d_model % heads:
        raise ValueError(f"{name}: heads={heads} must divide d_model={d_model}")
    if round(ff_mult * d_model) < 1:
        raise ValueError(f"{name}: ff_mult={ff_mult} leaves the MLP without a hidden unit")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
