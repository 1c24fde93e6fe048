"""RWKV-7 "Goose" (Peng et al. 2025): residual blocks around fla's `RWKV7Attention` time mixer.

Each head keeps a matrix memory updated by the generalized (diagonal plus low-rank) delta rule,
`S_t = (diag(w_t) - (a_t * kk_t) kk_t^T) S_{t-1} + k_t v_t^T` (`[d_key, d_value]` layout),
`o_t = S_t^T r_t`, with a per-channel decay `w_t` in `(0.545, 1)`, an in-context learning
rate `a_t`, token shift on every input, a value residual from the first layer (`v_first`), a
per-head GroupNorm and RWKV-7's bonus term. The parameters are those of
`fla.layers.RWKV7Attention` (names, shapes, initialisation, except the weights it starts at zero:
see `RWKV7Backbone`); the computation runs from them with a carried state: on CUDA through fla's
kernels (`chunk_rwkv7`, `fused_recurrent_rwkv7` for one token), elsewhere through fla's reference
generalized delta rule (`dplr_chunkwise`, `dplr_recurrence`) and its reference token-shift mix,
key update and output correction. Each block is followed by a GELU MLP (the zoo's, not RWKV's
channel mixer), so the members differ in their token mixers only.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones._fla_ops import Block, check_block_sizes, check_head_widths, fla
from backbones.base import Backbone, State, register_backbone

if TYPE_CHECKING:
    from fla.layers import RWKV7Attention

LOG_DECAY_MIN = -math.exp(-0.5)
"""fla's RWKV7Attention: log decay `w = -e^-0.5 * sigmoid(...)`, so `w` in `(LOG_DECAY_MIN, 0)`."""
CPU_CHUNK = 8
"""Chunk length of fla's chunked reference op on CPU: changes speed, not the result (8 to 10 were
the fastest of 4 to 32 for a training step at the 100k presets)."""
REDRAWN_STD = 0.02
"""Std of the weights fla's RWKV-7 initialisation leaves at zero, drawn here (`RWKV7Backbone`)."""


@dataclasses.dataclass
class RWKV7State(State):
    """Per layer, the last token's mixer input (token shift) and every head's matrix memory."""

    batch_dim = 0

    shift: tuple[Tensor, ...]
    """One `[B, d_model]` tensor per layer: the previous token's normed input to the layer."""
    memory: tuple[Tensor, ...]
    """One `[B, heads, d_head, d_head]` float32 tensor per layer."""


def generalized_delta_rule(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, memory: Tensor | None
) -> tuple[Tensor, Tensor]:
    """fla's RWKV-7 rule over `[B, T, H, *]` inputs from `memory` (None: zeros), scale 1:
    `S_t = diag(exp(w_t)) S_{t-1} + b_t a_t^T S_{t-1} + k_t v_t^T`, `o_t = S_t^T r_t`.
    Returns float32 `(o, memory)`."""
    length, d_key = r.shape[1], r.shape[-1]
    if r.is_cuda:
        kernels = fla("fla.ops.rwkv7")
        if length == 1 and not torch.is_grad_enabled():
            o, memory = kernels.fused_recurrent_rwkv7(
                r, w, k, v, a, b, scale=1.0, initial_state=memory, output_final_state=True
            )
        else:  # as fla's RWKV7Attention calls it
            o, memory = kernels.chunk_rwkv7(
                r,
                w,
                k,
                v,
                a,
                b,
                scale=1.0,
                initial_state=memory,
                output_final_state=True,
                safe_gate=True,
                lower_bound=LOG_DECAY_MIN,
                chunk_size=64,
            )
        return o.float(), memory
    # the reference ops take heads first, fixed chunks, and scale r by 1/sqrt(d_key) themselves
    r, w, k, v, a, b = (t.transpose(1, 2).float() for t in (r, w, k, v, a, b))
    r = r * math.sqrt(d_key)
    naive = fla("fla.ops.generalized_delta_rule.dplr.naive")
    if length == 1:
        o, memory = naive.dplr_recurrence(r, k, v, a, b, w, initial_state=memory)
    else:
        pad = -length % CPU_CHUNK  # padded steps: zero inputs and no decay leave the memory as is
        r, w, k, v, a, b = (F.pad(t, (0, 0, 0, pad)) for t in (r, w, k, v, a, b))
        o, memory = naive.dplr_chunkwise(
            r, k, v, a, b, w, initial_state=memory, chunk_size=CPU_CHUNK
        )
        o = o[:, :, :length]
    return o.transpose(1, 2), memory


def rwkv7_mix(
    attn: RWKV7Attention, x: Tensor, shift: Tensor, memory: Tensor | None, v_first: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """fla's `RWKV7Attention.forward` over `x: [B, T, D]` after `(shift, memory)` (memory None:
    zeros), without its Cache; `v_first` is the first layer's values (None in the first layer).
    Returns `(y, shift, memory, v_first)`."""
    heads, d_head = attn.num_heads, attn.head_dim
    delta = torch.cat([shift.unsqueeze(1).to(x.dtype), x[:, :-1]], dim=1) - x
    xr, xw, xk, xv, xa, xg = fla("fla.ops.rwkv7.fused_addcmul").torch_addcmul_rwkv7(
        x, delta, attn.x_r, attn.x_w, attn.x_k, attn.x_v, attn.x_a, attn.x_g
    )
    r = attn.r_proj(xr)
    w = LOG_DECAY_MIN * attn.w_lora(xw).sigmoid()
    k = attn.k_proj(xk)
    v = attn.v_proj(xv)
    if attn.layer_idx == 0:
        v_first = v
    elif v_first is None:
        raise ValueError("rwkv7: every layer after the first needs the first layer's values")
    else:
        v = torch.lerp(v, v_first, attn.v_lora(xv).sigmoid())
    a = attn.a_lora(xa).sigmoid()
    g = attn.g_lora(xg)
    kk = F.normalize((k * attn.k_k).unflatten(-1, (heads, d_head)), dim=-1, p=2.0)
    k = fla("fla.ops.rwkv7.fused_k_update").k_update_ref(k, a, attn.k_a)
    r, w, k, a = (t.unflatten(-1, (heads, d_head)) for t in (r, w, k, a))
    v = v.unflatten(-1, (heads, attn.head_v_dim))
    o, memory = generalized_delta_rule(r, w, k, v, -kk, kk * a, memory)
    o = attn.g_norm(o.to(x.dtype).flatten(0, 1).flatten(1)).view_as(x)
    correction = fla("fla.ops.rwkv7.gate_output_correction").gate_output_correction_ref
    o = correction(o, r, k, attn.r_k, v, g)
    return attn.o_proj(o), x[:, -1], memory, v_first


@register_backbone("rwkv7")
class RWKV7Backbone(Backbone[RWKV7State]):
    """RWKV-7 time-mixing blocks (fla's `RWKV7Attention`), each followed by a GELU MLP, and a
    final RMSNorm.

    fla initialises RWKV-7 as its authors do, with the output projection and the LoRAs' down
    projections at zero (each block starts as the identity); at zero they pass no gradient to the
    weights before them, so those are drawn from N(0, REDRAWN_STD^2) here: every parameter
    learns from the first step, and the blocks start close to the identity.
    """

    width_args = ("d_model",)

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        heads: int,
        low_rank_dim: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the input and output features.
            depth: number of RWKV-7 + MLP blocks.
            heads: heads of each layer; head width `d_model // heads` (must divide, and be even:
                fla's 16-bit backward).
            low_rank_dim: rank of the LoRAs that make the decay, the in-context learning rate,
                the value residual's mix and the output gate (fla's defaults, at least 32 each,
                are sized for models of d_model 512 and up).
            ff_mult: MLP hidden width as a multiple of d_model.
            dropout: dropout on each block's residual branches and inside the MLP.
        """
        super().__init__()
        check_block_sizes(
            self.name, d_model=d_model, depth=depth, heads=heads, ff_mult=ff_mult, dropout=dropout
        )
        if low_rank_dim < 1:
            raise ValueError(f"{self.name}: low_rank_dim must be >= 1, got {low_rank_dim}")
        d_head = d_model // heads
        check_head_widths(self.name, d_key=d_head, d_value=d_head)
        self.d_model = d_model
        with warnings.catch_warnings():  # fla warns on every RWKV7Attention it builds
            warnings.filterwarnings("ignore", message="According to Bo")
            attns = [
                fla("fla.layers").RWKV7Attention(
                    hidden_size=d_model,
                    head_dim=d_head,
                    decay_low_rank_dim=low_rank_dim,
                    gate_low_rank_dim=low_rank_dim,
                    a_low_rank_dim=low_rank_dim,
                    v_low_rank_dim=low_rank_dim,
                    layer_idx=i,
                    # fla's initialisation divides by num_hidden_layers - 1
                    num_hidden_layers=max(depth, 2),
                )
                for i in range(depth)
            ]
        for attn in attns:
            for module in attn.modules():
                if isinstance(module, nn.Linear) and not module.weight.any():
                    nn.init.normal_(module.weight, std=REDRAWN_STD)
        self.blocks = nn.ModuleList(
            Block(attn=attn, d_model=d_model, ff_mult=ff_mult, dropout=dropout) for attn in attns
        )
        self.norm = nn.RMSNorm(d_model)
        self._memory_shape = (heads, d_head, d_head)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> RWKV7State:
        shift = torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)
        memory = torch.zeros(batch_size, *self._memory_shape, device=device, dtype=torch.float32)
        return RWKV7State(
            shift=tuple(shift.clone() for _ in self.blocks),
            memory=tuple(memory.clone() for _ in self.blocks),
        )

    def forward(self, x: Tensor, *, state: RWKV7State | None = None) -> tuple[Tensor, RWKV7State]:
        memories: Sequence[Tensor | None]
        if state is None:  # zero memories go to fla as None (its kernels' fast path)
            fresh = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
            shifts, memories = fresh.shift, (None,) * len(self.blocks)
        else:
            shifts, memories = state.shift, state.memory
        new_shifts, new_memories = [], []
        v_first = None
        blocks = cast("Iterable[Block]", self.blocks)  # a ModuleList is typed as any Module's
        for block, shift, memory in zip(blocks, shifts, memories, strict=True):
            mixed, shift, memory, v_first = rwkv7_mix(
                block.attn, block.attn_norm(x), shift, memory, v_first
            )
            x = block.finish(x, mixed)
            new_shifts.append(shift)
            new_memories.append(memory)
        return self.norm(x), RWKV7State(shift=tuple(new_shifts), memory=tuple(new_memories))
