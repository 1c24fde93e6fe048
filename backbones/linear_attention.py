"""Linear attention and its gated relative, as pre-norm residual blocks around flash-linear-attention.

Both members run fla's simple-GLA operator: a matrix memory per head, `S_t = a_t S_{t-1} + k_t v_t^T`,
read out as `o_t = S_t^T q_t` (times the usual `1/sqrt(d_head)`). On CUDA tensors they use fla's
Triton kernels (chunked for sequences, fused recurrent for one token); elsewhere fla's reference
ops (`naive_chunk_simple_gla`, `naive_recurrent_simple_gla`), because fla's layers need a GPU.

- `linear_attention`: Katharopoulos et al. 2020 ("Transformers are RNNs"): feature map elu + 1 on
  queries and keys, no decay (a_t = 1), output normalised by `phi(q_t) . sum_j phi(k_j)`. The
  normaliser rides along as one extra value channel of ones, so the same operator carries it
  (an odd value width at an even head width: `simple_gla` pads the kernels' inputs to even
  widths, which fla's 16-bit backward needs).
- `simple_gla`: gated linear attention with a data-dependent decay per head
  (a_t = exp(logsigmoid(w . x_t) / 16), as fla's `SimpleGatedLinearAttention`), per-head RMSNorm
  and a swish output gate; keys half as wide as values (GLA's `expand_k = 0.5`), which also keeps
  its parameter count level with the other members'.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones._fla_ops import fla
from backbones.base import Backbone, State, register_backbone

CHUNK_SIZE = 64
GATE_LOGIT_NORMALIZER = 16.0  # fla's default: keeps initial decays close to 1 (long memory)
NORMALIZER_EPS = 1e-6  # Katharopoulos et al.'s epsilon in the denominator


@dataclasses.dataclass
class LinearAttentionState(State):
    """Per layer, the matrix memory of every head (float32, the precision fla accumulates in)."""

    batch_dim = 0

    memory: tuple[Tensor, ...]
    """One `[B, heads, d_key, d_value]` tensor per layer (`d_value = d_head + 1` for the
    normalised `linear_attention`: the last column accumulates the keys for the denominator)."""


def uses_kernels(t: Tensor) -> bool:
    """Whether fla's Triton kernels run on `t` (a CUDA tensor); its reference ops otherwise. A
    function of its own so that a CPU test can make a tensor claim CUDA."""
    return t.is_cuda


def even_width(width: int) -> int:
    """`width` rounded up to even: fla's chunked backward asserts even key and value widths for
    16-bit inputs (`chunk_bwd_dv`), and a head width of the tuning space can be odd."""
    return width + width % 2


def _pad_last(t: Tensor, width: int) -> Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def simple_gla(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, memory: Tensor | None
) -> tuple[Tensor, Tensor]:
    """fla's simple-GLA over `[B, T, H, *]` inputs from `memory`; returns float32 `(o, memory)`.

    `g` is the log decay `[B, T, H]` (None: no decay). Dispatches to fla's Triton kernels on
    CUDA and to its reference ops elsewhere. The kernels get keys and values padded with zero
    channels to even widths (exact: a zero key channel adds nothing to `q . k` and its memory row
    stays zero, a zero value channel reads out zero), the scale of the true key width, and the
    padding is cut from the output and the memory, so the state's shape is the same on every
    device.
    """
    length = q.shape[1]
    if uses_kernels(q):
        d_key, d_value = k.shape[-1], v.shape[-1]
        keys, values = even_width(d_key), even_width(d_value)
        q, k, v = _pad_last(q, keys), _pad_last(k, keys), _pad_last(v, values)
        if memory is not None:
            memory = F.pad(memory, (0, values - d_value, 0, keys - d_key))
        kernels = fla("fla.ops.simple_gla")
        op = kernels.fused_recurrent_simple_gla if length == 1 else kernels.chunk_simple_gla
        o, memory = op(
            q, k, v, g=g, scale=d_key**-0.5, initial_state=memory, output_final_state=True
        )
        return o[..., :d_value].float(), memory[..., :d_key, :d_value].contiguous()
    if g is None:
        g = q.new_zeros(q.shape[:3])
    naive = fla("fla.ops.simple_gla.naive")
    if length == 1:
        o, memory = naive.naive_recurrent_simple_gla(
            q, k, v, g, initial_state=memory, output_final_state=True
        )
        return o.float(), memory
    return naive.naive_chunk_simple_gla(
        q,
        k,
        v,
        g,
        initial_state=memory,
        output_final_state=True,
        chunk_size=min(CHUNK_SIZE, length),
    )


class LinearAttentionMixer(nn.Module):
    """Multi-head linear attention token mixer: plain (normalised, elu + 1) or gated (decay)."""

    def __init__(self, *, d_model: int, heads: int, d_key: int, gated: bool) -> None:
        super().__init__()
        self.heads = heads
        self.d_key = d_key
        self.d_head = d_model // heads
        self.gated = gated
        self.qkv_proj = nn.Linear(d_model, 2 * heads * d_key + d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        if gated:
            self.decay_proj = nn.Linear(d_model, heads)
            self.gate_proj = nn.Linear(d_model, d_model, bias=False)
            self.head_norm = nn.RMSNorm(self.d_head)

    def forward(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor]:
        batch, length, _ = x.shape
        qk, v = self.qkv_proj(x).split([2 * self.heads * self.d_key, self.d_head * self.heads], -1)
        q, k = qk.view(batch, length, 2, self.heads, self.d_key).unbind(2)
        v = v.view(batch, length, self.heads, self.d_head)
        if self.gated:
            g = F.logsigmoid(self.decay_proj(x).float()) / GATE_LOGIT_NORMALIZER
            o, memory = simple_gla(q, k, v, g, memory)
            o = self.head_norm(o.to(x.dtype)).flatten(2) * F.silu(self.gate_proj(x))
        else:
            q, k = F.elu(q) + 1, F.elu(k) + 1
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
            o, memory = simple_gla(q, k, v, None, memory)
            o = (o[..., :-1] / (o[..., -1:] + NORMALIZER_EPS)).to(x.dtype).flatten(2)
        return self.out_proj(o), memory


class LinearAttentionBlock(nn.Module):
    """Pre-norm residual block: token mixer, then a GELU MLP."""

    def __init__(
        self, *, d_model: int, heads: int, d_key: int, ff_mult: int, dropout: float, gated: bool
    ):
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model)
        self.mixer = LinearAttentionMixer(d_model=d_model, heads=heads, d_key=d_key, gated=gated)
        self.mlp_norm = nn.RMSNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * d_model, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor]:
        mixed, memory = self.mixer(self.mixer_norm(x), memory)
        x = x + self.dropout(mixed)
        return x + self.dropout(self.mlp(self.mlp_norm(x))), memory


@register_backbone("linear_attention")
class LinearAttentionBackbone(Backbone[LinearAttentionState]):
    """Causal linear attention (Katharopoulos et al. 2020): elu + 1 features, normalised, no decay."""

    gated = False
    key_ratio = 1.0  # key width per head / value width per head

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        heads: int,
        ff_mult: int = 4,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the input and output features.
            depth: number of mixer + MLP blocks.
            heads: heads of the mixer; must divide d_model (head width = d_model // heads).
            ff_mult: MLP hidden width as a multiple of d_model.
            dropout: dropout on each block's residual branches and inside the MLP.
        """
        super().__init__()
        if d_model % heads != 0:
            raise ValueError(f"{self.name}: heads={heads} must divide d_model={d_model}")
        self.d_model = d_model
        self.heads = heads
        self.d_head = d_model // heads
        self.d_key = max(int(self.d_head * self.key_ratio), 1)
        self.blocks = nn.ModuleList(
            LinearAttentionBlock(
                d_model=d_model,
                heads=heads,
                d_key=self.d_key,
                ff_mult=ff_mult,
                dropout=dropout,
                gated=self.gated,
            )
            for _ in range(depth)
        )
        self.norm = nn.RMSNorm(d_model)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> LinearAttentionState:
        d_value = self.d_head + (0 if self.gated else 1)
        shape = (batch_size, self.heads, self.d_key, d_value)
        zeros = torch.zeros(shape, device=device, dtype=torch.float32)
        return LinearAttentionState(memory=tuple(zeros.clone() for _ in self.blocks))

    def forward(
        self, x: Tensor, *, state: LinearAttentionState | None = None
    ) -> tuple[Tensor, LinearAttentionState]:
        memories = [None] * len(self.blocks) if state is None else state.memory
        new_memories = []
        for block, memory in zip(self.blocks, memories, strict=True):
            x, memory = block(x, memory)
            new_memories.append(memory)
        return self.norm(x), LinearAttentionState(memory=tuple(new_memories))


@register_backbone("simple_gla")
class SimpleGLABackbone(LinearAttentionBackbone):
    """Gated linear attention with a data-dependent decay per head (fla's simple GLA)."""

    gated = True
    key_ratio = 0.5
