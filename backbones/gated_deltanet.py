"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024): residual blocks around fla's `GatedDeltaNet`.

Each head keeps a matrix memory that decays and is corrected toward the new value for its key
(the gated delta rule, `backbones._fla_ops.gated_delta_rule`): `S_t = (I - b_t k_t k_t^T) a_t
S_{t-1} + b_t k_t v_t^T`, `o_t = S_t^T q_t`, with a data-dependent decay `a_t` (Mamba2's gate) and
write strength `b_t`, q and k after a short causal convolution, SiLU and an L2 norm. The output
goes through a per-head RMSNorm with a swish gate. The parameters are those of
`fla.layers.GatedDeltaNet` (names, shapes, initialisation); the computation runs from them with a
carried state: on CUDA through fla's kernels (`chunk_gated_delta_rule`, `fused_recurrent_...`
for one token), elsewhere through fla's reference ops (`naive_chunk_gated_delta_rule`,
`naive_recurrent_...`), fla's reference gate (`naive_gdn_gate`) and gated norm (`rms_norm_ref`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from backbones._fla_ops import (
    Block,
    check_block_sizes,
    check_head_widths,
    fla,
    gated_delta_rule,
)
from backbones._mamba_ops import causal_conv, conv_history
from backbones.base import Backbone, State, register_backbone

if TYPE_CHECKING:
    from fla.layers import GatedDeltaNet


@dataclasses.dataclass
class GatedDeltaNetState(State):
    """Per layer, the short convolutions' input history and every head's matrix memory."""

    batch_dim = 0

    conv: tuple[Tensor, ...]
    """One `[B, 2 * heads * d_key + heads * d_value, conv_size - 1]` tensor per layer: the last
    inputs of the q, k and v convolutions, in that channel order."""
    memory: tuple[Tensor, ...]
    """One `[B, heads, d_key, d_value]` float32 tensor per layer."""


def gated_deltanet_mix(
    attn: GatedDeltaNet, x: Tensor, conv: Tensor, memory: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """fla's `GatedDeltaNet.forward` over `x: [B, T, D]` after `(conv, memory)` (memory None:
    zeros), without its Cache. Returns `(y, conv, memory)`."""
    qkv = torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1).transpose(1, 2)
    weight = torch.cat([attn.q_conv1d.weight, attn.k_conv1d.weight, attn.v_conv1d.weight])
    mixed = causal_conv(qkv, conv, weight, None).transpose(1, 2)
    q, k, v = mixed.split([attn.key_dim, attn.key_dim, attn.value_dim], dim=-1)
    q, k = (t.unflatten(-1, (attn.num_heads, attn.head_k_dim)) for t in (q, k))
    v = v.unflatten(-1, (attn.num_v_heads, attn.head_v_dim))
    beta = attn.b_proj(x).sigmoid()
    g = fla("fla.ops.gated_delta_rule.gate").naive_gdn_gate(
        attn.a_proj(x), attn.A_log, attn.dt_bias
    )
    o, memory = gated_delta_rule(q, k, v, g, beta, memory)
    gate = attn.g_proj(x).unflatten(-1, (attn.num_v_heads, attn.head_v_dim))
    o = fla("fla.modules.norm.layernorm_gated").rms_norm_ref(
        o, attn.o_norm.weight, None, z=gate, eps=attn.o_norm.eps
    )
    return attn.o_proj(o.flatten(2).to(x.dtype)), conv_history(conv, qkv), memory


@register_backbone("gated_deltanet")
class GatedDeltaNetBackbone(Backbone[GatedDeltaNetState]):
    """Gated DeltaNet blocks (fla's `GatedDeltaNet` with its short convolutions and output gate),
    each followed by a GELU MLP, and a final RMSNorm."""

    width_args = ("d_model",)

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        heads: int,
        key_ratio: float = 0.5,
        conv_size: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the input and output features.
            depth: number of Gated DeltaNet + MLP blocks.
            heads: heads of each layer; value width per head `d_model // heads` (must divide).
            key_ratio: key width per head as a fraction of the value width (0.5, as GLA's
                `expand_k`, keeps the parameter count level with the other members'). Key and
                value widths per head must be even integers (fla's 16-bit backward).
            conv_size: width of the short causal convolutions on q, k and v.
            ff_mult: MLP hidden width as a multiple of d_model.
            dropout: dropout on each block's residual branches and inside the MLP.
        """
        super().__init__()
        check_block_sizes(
            self.name, d_model=d_model, depth=depth, heads=heads, ff_mult=ff_mult, dropout=dropout
        )
        if conv_size < 2:
            raise ValueError(f"{self.name}: conv_size must be >= 2, got {conv_size}")
        d_value = d_model // heads
        check_head_widths(self.name, d_key=d_value * key_ratio, d_value=d_value)
        d_key = int(d_value * key_ratio)
        self.d_model = d_model
        self.blocks = nn.ModuleList(
            Block(
                attn=fla("fla.layers").GatedDeltaNet(
                    hidden_size=d_model,
                    head_dim=d_key,
                    num_heads=heads,
                    expand_v=d_value / d_key,
                    use_gate=True,
                    use_short_conv=True,
                    conv_size=conv_size,
                    layer_idx=i,
                ),
                d_model=d_model,
                ff_mult=ff_mult,
                dropout=dropout,
            )
            for i in range(depth)
        )
        if (
            cast(Block, self.blocks[0]).attn.head_v_dim != d_value
        ):  # fla rounds head_dim * expand_v down
            raise ValueError(f"{self.name}: key_ratio={key_ratio} gives no whole value width")
        self.norm = nn.RMSNorm(d_model)
        self._conv_channels = 2 * heads * d_key + heads * d_value
        self._memory_shape = (heads, d_key, d_value)
        self._conv_size = conv_size

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> GatedDeltaNetState:
        conv = torch.zeros(
            batch_size, self._conv_channels, self._conv_size - 1, device=device, dtype=dtype
        )
        memory = torch.zeros(batch_size, *self._memory_shape, device=device, dtype=torch.float32)
        return GatedDeltaNetState(
            conv=tuple(conv.clone() for _ in self.blocks),
            memory=tuple(memory.clone() for _ in self.blocks),
        )

    def forward(
        self, x: Tensor, *, state: GatedDeltaNetState | None = None
    ) -> tuple[Tensor, GatedDeltaNetState]:
        memories: Sequence[Tensor | None]
        if state is None:  # zero memories go to fla as None (its kernels' fast path)
            fresh = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
            convs, memories = fresh.conv, (None,) * len(self.blocks)
        else:
            convs, memories = state.conv, state.memory
        new_convs, new_memories = [], []
        blocks = cast("Iterable[Block]", self.blocks)  # a ModuleList is typed as any Module's
        for block, conv, memory in zip(blocks, convs, memories, strict=True):
            mixed, conv, memory = gated_deltanet_mix(block.attn, block.attn_norm(x), conv, memory)
            x = block.finish(x, mixed)
            new_convs.append(conv)
            new_memories.append(memory)
        return self.norm(x), GatedDeltaNetState(conv=tuple(new_convs), memory=tuple(new_memories))
