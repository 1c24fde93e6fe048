"""Mixture-of-Memories (Du et al. 2025, "MoM"): residual blocks around fla's `MomAttention`.

A router sends every token to its `topk` of `num_memories` memories; each memory is a Gated
DeltaNet memory per head (`backbones._fla_ops.gated_delta_rule`) with its own key, value, decay
and write projections, updated only by the tokens routed to it, whose short convolutions run over
that memory's own tokens. A token's output is its memories' outputs mixed by the renormalised
router weights, then a per-head RMSNorm with a swish gate. The parameters are those of
`fla.layers.MomAttention` (names, shapes, initialisation; no shared memory, a key and value
projection per memory); the computation runs from them with a carried state, on CUDA through
fla's kernels, elsewhere through fla's reference ops.

fla's layer gathers each memory's tokens into variable-length sequences; here they are gathered
into a padded `[B, L, memories]` layout (a stable sort, so each memory sees its tokens in time
order), the padded steps leaving the memory as it was (no decay, no write), so that one call of
the delta rule runs every memory of every sequence as a head. fla's MoM model adds a router
load-balancing loss; the backbone contract carries no auxiliary loss, so routing is learned from
the task loss alone.
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
from backbones._mamba_ops import causal_conv
from backbones.base import Backbone, State, register_backbone

if TYPE_CHECKING:
    from fla.layers import MomAttention


@dataclasses.dataclass
class MoMState(State):
    """Per layer and memory, the short convolutions' input history and every head's matrix
    memory."""

    batch_dim = 0

    conv: tuple[Tensor, ...]
    """One `[B, memories, 2 * heads * d_key + heads * d_value, conv_size - 1]` tensor per layer:
    the last inputs routed to each memory, of its q, k and v convolutions, in that order."""
    memory: tuple[Tensor, ...]
    """One `[B, memories, heads, d_key, d_value]` float32 tensor per layer."""


def route(attn: MomAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """fla's top-k router: `(routed [B, T, M] bool, weights [B, T, M])`, the weights of the
    chosen memories renormalised to sum to 1 (0 elsewhere)."""
    scores = attn.gate(x).softmax(dim=-1, dtype=torch.float32)
    weights, chosen = scores.topk(attn.topk, dim=-1)
    weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
    routed = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, chosen, True)
    return routed, torch.zeros_like(scores, dtype=x.dtype).scatter(-1, chosen, weights)


def mom_mix(
    attn: MomAttention, x: Tensor, conv: Tensor, memory: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """fla's `MomAttention.forward` over `x: [B, T, D]` after `(conv, memory)` (memory None:
    zeros), without its Cache. Returns `(y, conv, memory)`."""
    batch = x.shape[0]
    memories, heads = attn.num_memories, attn.num_heads
    routed, weights = route(attn, x)
    # every memory's projections of every token: [B, T, M, channels]
    q = attn.q_proj(x).unsqueeze(2).expand(-1, -1, memories, -1)
    k, v, a, b = (
        torch.einsum("btd,mcd->btmc", x, torch.stack([p.weight for p in projections]))
        for projections in (attn.k_proj, attn.v_proj, attn.a_proj, attn.b_proj)
    )
    # each memory's tokens in time order first: [B, L, M, channels], valid while < counts
    counts = routed.sum(dim=1)  # [B, M]
    span = int(counts.max())
    order = torch.sort((~routed).to(torch.uint8), dim=1, stable=True).indices[:, :span]
    valid = torch.arange(span, device=x.device)[None, :, None] < counts[:, None, :]

    def gather(t: Tensor) -> Tensor:
        return t.gather(1, order.unsqueeze(-1).expand(-1, -1, -1, t.shape[-1]))

    qkv = gather(torch.cat([q, k, v], dim=-1)).permute(0, 2, 3, 1)  # [B, M, C, L]
    history = conv.flatten(0, 1)  # [B * M, C, W - 1]
    weight = torch.cat([attn.q_conv1d.weight, attn.k_conv1d.weight, attn.v_conv1d.weight])
    mixed = causal_conv(qkv.flatten(0, 1), history, weight, None)
    # the next history: the last W - 1 inputs of each memory's own (valid) tokens
    both = torch.cat([history.to(qkv.dtype), qkv.flatten(0, 1)], dim=-1)
    last = counts.flatten()[:, None, None] + torch.arange(history.shape[-1], device=x.device)
    conv = both.gather(-1, last.expand(-1, both.shape[1], -1)).view_as(conv)

    q, k, v = (
        mixed.view_as(qkv)
        .permute(0, 3, 1, 2)
        .split([attn.key_dim, attn.key_dim, attn.value_dim], dim=-1)
    )  # [B, L, M, channels]
    q, k = (t.reshape(batch, span, memories * heads, attn.head_qk_dim) for t in (q, k))
    v = v.reshape(batch, span, memories * heads, attn.head_v_dim)
    still = ~valid.unsqueeze(-1)  # padded steps: no decay, no write
    g = (
        fla("fla.ops.gated_delta_rule.gate")
        .naive_gdn_gate(gather(a), attn.A_log, attn.dt_bias)
        .masked_fill(still, 0.0)
    )
    beta = gather(b).sigmoid().masked_fill(still, 0.0)
    if memory is not None:
        memory = memory.flatten(1, 2)
    o, memory = gated_delta_rule(q, k, v, g.flatten(2), beta.flatten(2), memory)
    memory = memory.unflatten(1, (memories, heads))

    # back to time order: token t's output from memory m is at its rank among m's tokens
    rank = (routed.cumsum(dim=1) - 1).clamp(min=0)  # [B, T, M]
    o = o.reshape(batch, span, memories, attn.value_dim)
    o = o.gather(1, rank.unsqueeze(-1).expand(-1, -1, -1, attn.value_dim))
    o = (o * weights.unsqueeze(-1)).sum(dim=2).unflatten(-1, (heads, attn.head_v_dim))
    gate = attn.g_proj(x).unflatten(-1, (heads, attn.head_v_dim))
    o = fla("fla.modules.norm.layernorm_gated").rms_norm_ref(
        o, attn.o_norm.weight, None, z=gate, eps=attn.o_norm.eps
    )
    return attn.o_proj(o.flatten(2).to(x.dtype)), conv, memory


@register_backbone("mom")
class MoMBackbone(Backbone[MoMState]):
    """Mixture-of-Memories blocks (fla's `MomAttention`: top-k routed Gated DeltaNet memories),
    each followed by a GELU MLP, and a final RMSNorm."""

    width_args = ("d_model",)

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        heads: int,
        num_memories: int = 4,
        topk: int = 2,
        key_ratio: float = 0.5,
        conv_size: int = 4,
        ff_mult: float = 1.5,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the input and output features.
            depth: number of MoM + MLP blocks.
            heads: heads of each memory; value width per head `d_model // heads` (must divide).
            num_memories: memories per layer, each with its own key, value, decay and write
                projections.
            topk: memories each token is routed to (at most num_memories).
            key_ratio: key width per head as a fraction of the value width. Key and value widths
                per head must be even integers (fla's 16-bit backward).
            conv_size: width of the short causal convolutions on q, k and v.
            ff_mult: MLP hidden width as a multiple of d_model (1.5 by default, where the other
                members have 4: the memories' own projections take those parameters).
            dropout: dropout on each block's residual branches and inside the MLP.
        """
        super().__init__()
        check_block_sizes(
            self.name, d_model=d_model, depth=depth, heads=heads, ff_mult=ff_mult, dropout=dropout
        )
        if not 1 <= topk <= num_memories:
            raise ValueError(
                f"{self.name}: topk must be in [1, num_memories={num_memories}], got {topk}"
            )
        if conv_size < 2:
            raise ValueError(f"{self.name}: conv_size must be >= 2, got {conv_size}")
        d_value = d_model // heads
        check_head_widths(self.name, d_key=d_value * key_ratio, d_value=d_value)
        d_key = int(d_value * key_ratio)
        self.d_model = d_model
        self.blocks = nn.ModuleList(
            Block(
                attn=fla("fla.layers").MomAttention(
                    hidden_size=d_model,
                    head_dim=d_key,
                    num_heads=heads,
                    expand_v=d_value / d_key,
                    num_memories=num_memories,
                    topk=topk,
                    use_output_gate=True,
                    use_short_conv=True,
                    conv_size=conv_size,
                    shared_mem=False,
                    single_kv_proj=False,
                    layer_idx=i,
                ),
                d_model=d_model,
                ff_mult=ff_mult,
                dropout=dropout,
            )
            for i in range(depth)
        )
        self.norm = nn.RMSNorm(d_model)
        self._conv_shape = (num_memories, 2 * heads * d_key + heads * d_value, conv_size - 1)
        self._memory_shape = (num_memories, heads, d_key, d_value)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MoMState:
        conv = torch.zeros(batch_size, *self._conv_shape, device=device, dtype=dtype)
        memory = torch.zeros(batch_size, *self._memory_shape, device=device, dtype=torch.float32)
        return MoMState(
            conv=tuple(conv.clone() for _ in self.blocks),
            memory=tuple(memory.clone() for _ in self.blocks),
        )

    def forward(self, x: Tensor, *, state: MoMState | None = None) -> tuple[Tensor, MoMState]:
        memories: Sequence[Tensor | None]
        if state is None:  # zero memories go to fla as None (its kernels' fast path)
            fresh = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
            convs, memories = fresh.conv, (None,) * len(self.blocks)
        else:
            convs, memories = state.conv, state.memory
        new_convs, new_memories = [], []
        blocks = cast("Iterable[Block]", self.blocks)  # a ModuleList is typed as any Module's
        for block, conv, memory in zip(blocks, convs, memories, strict=True):
            mixed, conv, memory = mom_mix(block.attn, block.attn_norm(x), conv, memory)
            x = block.finish(x, mixed)
            new_convs.append(conv)
            new_memories.append(memory)
        return self.norm(x), MoMState(conv=tuple(new_convs), memory=tuple(new_memories))
