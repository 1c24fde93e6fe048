"""Causal transformer: an x-transformers `Decoder` with rotary positions and an attention window.

Each token attends to at most the last `context_len` tokens, itself included
(x-transformers' `attn_max_attend_past = context_len - 1`). The window is switched on only for
sequences longer than it: a training window no longer than the attention window runs SDPA's plain
causal path, with no mask to build or apply (about 10% of the training step on CPU).

The incremental path (`step`, what the in-context evaluation runs) keeps every layer's keys and
values of the last `context_len` tokens in a fixed ring buffer, keys already rotated at their
absolute positions, and writes one slot per token: a stream of any length costs O(context_len)
per token and equals the parallel forward with the same window (to float precision). Through
x-transformers' own KV cache a step copied and re-rotated the whole cache in every layer
(`torch.cat` 54% of an evaluation step at 1,296 tasks x 200 cached tokens, the rotary's
multiplies 12% more: BENCHMARKS.md "In-context evaluation"). `step` reuses the decoder's own modules
(norms, projections, feed-forwards, rotary) and SDPA; a chunk of several tokens with a state
still runs x-transformers' decoder, the ring converted to its cache and back. Neither is a
recompute over the last `context_len` tokens: with several layers the receptive field of a
sliding window reaches further back (docs/dependencies.md).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor
from x_transformers import Decoder
from x_transformers.attend import Intermediates
from x_transformers.x_transformers import LayerIntermediates, apply_rotary_pos_emb

from backbones.base import Backbone, State, register_backbone


@dataclasses.dataclass
class TransformerState(State):
    """Per attention layer, the keys and values of the tokens a next token can still see, in one
    of two layouts (`ring`), converted on demand so that neither path pays for the other:

    - `ring=False`, what `forward` returns (training pays nothing for it: views of its own
      keys): x-transformers' cache, the last `min(seen, context_len - 1)` tokens oldest first,
      keys un-rotated;
    - `ring=True`, what `step` keeps: a ring buffer of `context_len` slots, the token at absolute
      position p in slot `p % context_len`, keys rotated at their absolute position (attention
      with rotary positions depends only on distances, so a query rotated at its own position
      reads them as the parallel forward does). `step` writes its slot in place: a state stepped
      from is spent (copy it first, `map_tensors(Tensor.clone)`, to branch).
    """

    keys: tuple[Tensor, ...]
    """One `[B, heads, L, d_head]` tensor per layer (ring: L = context_len, unwritten slots 0)."""
    values: tuple[Tensor, ...]
    """One `[B, heads, L, d_head]` tensor per layer."""
    seen: int = 0
    """Tokens processed so far: the absolute position of the next one."""
    ring: bool = False
    """The layout (above)."""

    def select(self, rows: Tensor) -> TransformerState:
        # the batch is dim 0 in both layouts; `batch_dim` stays None because the cache layout's
        # length grows, so rows of two states cannot be mixed (`where`)
        return self.map_tensors(lambda t: t.index_select(0, rows))  # type: ignore[return-value]


@register_backbone("transformer")
class TransformerBackbone(Backbone[TransformerState]):
    """Pre-norm causal transformer (x-transformers `Decoder`, SDPA attention, rotary positions).

    `forward` is x-transformers' decoder; `step` is one token through the same modules with a
    ring-buffer KV cache (module docstring).
    """

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        heads: int,
        context_len: int | None = None,
        ff_mult: int = 4,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the input and output features.
            depth: number of attention + feed-forward blocks.
            heads: attention heads; must divide d_model (head width = d_model // heads).
            context_len: attention window, in tokens, the current token included; None (the
                default): the training context, set by the learner (`follow_context`) from the
                data, so training and `stream` evaluation see the same span.
            ff_mult: feed-forward hidden width as a multiple of d_model.
            dropout: dropout in the feed-forward blocks.
            attn_dropout: dropout on the attention weights. On CPU any value above 0 moves SDPA
                from its fused kernel to the unfused math path and draws a mask over every
                [T, T] attention map: about twice the training step (BENCHMARKS.md).
        """
        super().__init__()
        if d_model % heads != 0 or d_model // heads < 8:
            raise ValueError(
                f"transformer: heads={heads} must divide d_model={d_model} into heads at least "
                "8 wide (rotary positions use half of each head's features)"
            )
        if context_len is not None and context_len < 1:
            raise ValueError(f"transformer: context_len must be >= 1, got {context_len}")
        self.d_model = d_model
        self.depth = depth
        self.heads = heads
        self.d_head = d_model // heads
        self.context_len = context_len
        self.decoder = Decoder(
            dim=d_model,
            depth=depth,
            heads=heads,
            attn_dim_head=self.d_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=dropout,
            rotary_pos_emb=True,
            attn_flash=True,
            attn_max_attend_past=None if context_len is None else context_len - 1,
            verbose=False,  # its only message asks for rotary width >= 32, which small heads lack
        )
        # x-transformers reads `max_attend_past` from each attention module at every forward
        self._attentions = [m for m in self.decoder.modules() if hasattr(m, "max_attend_past")]
        assert len(self._attentions) == depth
        # `step` runs the layers itself: what it reproduces is the decoder built here (pre-norm,
        # plain residuals, rotary on every head, nothing between the layers); pinned by the
        # step == forward tests of every member
        assert self.decoder.layer_types == ("a", "f") * depth
        assert all(p is None for (_, *post), _, _ in self.decoder.layers for p in post)

    def follow_context(self, context_len: int) -> None:
        if self.context_len is None:
            if context_len < 1:
                raise ValueError(f"transformer: context_len must be >= 1, got {context_len}")
            self.context_len = context_len

    @property
    def window(self) -> int:
        """The attention window (tokens), once known."""
        if self.context_len is None:
            raise ValueError(
                "transformer: context_len is unset (it follows the training context when an "
                "InContextLearner is built on it); give context_len to use the backbone alone"
            )
        return self.context_len

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> TransformerState:
        shape = (batch_size, self.heads, self.window, self.d_head)
        return TransformerState(
            keys=tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.depth)),
            values=tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.depth)),
            ring=True,
        )

    def forward(
        self, x: Tensor, *, state: TransformerState | None = None
    ) -> tuple[Tensor, TransformerState]:
        if state is not None:
            self._check(state)
        seen = 0 if state is None else state.seen
        cached = min(seen, self.window - 1)  # what the next token can still see
        window = self.window_for(cached + x.shape[1])
        for attention in self._attentions:
            attention.max_attend_past = window
        if cached == 0:
            y, intermediates = self.decoder(x, return_hiddens=True)
        else:
            assert state is not None
            y, intermediates = self.decoder(
                x, cache=self._as_cache(state, cached), cache_age=x.shape[1], return_hiddens=True
            )
        return y, self._trimmed_state(intermediates, seen=seen + x.shape[1])

    def step(self, x_t: Tensor, *, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """One token through the decoder's layers, its keys and values written to their slot."""
        self._check(state)
        if not state.ring:
            state = self._as_ring(state)
        position, window = state.seen, self.window
        slot, visible = position % window, min(position + 1, window)
        freqs = self._rotary(torch.tensor([position], device=x_t.device))
        x = x_t[:, None]
        attention = 0
        for layer_type, ((norm, *_), block, residual) in zip(
            self.decoder.layer_types, self.decoder.layers, strict=True
        ):
            h = norm(x)
            if layer_type == "a":
                q = apply_rotary_pos_emb(block.split_q_heads(block.to_q(h)), freqs)
                k = apply_rotary_pos_emb(block.split_k_heads(block.to_k(h)), freqs)
                keys, values = state.keys[attention], state.values[attention]
                keys[:, :, slot] = k[:, :, 0]
                values[:, :, slot] = block.split_v_heads(block.to_v(h))[:, :, 0]
                # the visible slots hold exactly the window (order does not matter to attention)
                out = F.scaled_dot_product_attention(
                    q, keys[:, :, :visible], values[:, :, :visible], scale=block.attend.scale
                )
                h = block.to_out(block.merge_heads(out))
                attention += 1
            else:
                h = block(h)
            x = residual(h, x)
        y = self.decoder.final_norm(x)[:, 0]
        return y, dataclasses.replace(state, seen=position + 1)

    def _check(self, state: TransformerState) -> None:
        if len(state.keys) != self.depth:
            raise ValueError(
                f"transformer: a state of {len(state.keys)} layers for a model of {self.depth}"
            )

    def window_for(self, keys: int) -> int | None:
        """The attention window for `keys` positions: None (plain causal) when all of them fit."""
        return self.window - 1 if keys > self.window else None

    def _rotary(self, positions: Tensor) -> Tensor:
        """The decoder's rotary frequencies `[1, L, rotary dims]` at absolute `positions` `[L]`
        (plain rotary, no xpos scale: as built here)."""
        rotary = self.decoder.rotary_pos_emb
        assert rotary is not None  # built with rotary_pos_emb=True
        freqs, scale = rotary(positions)
        assert scale == 1.0
        return freqs

    def _as_cache(self, state: TransformerState, cached: int) -> LayerIntermediates:
        """The x-transformers cache of a state: the last `cached` tokens' keys and values, oldest
        first, keys un-rotated (x-transformers rotates after reading its cache, from position 0)."""
        keys, values = state.keys, state.values
        if state.ring:
            positions = torch.arange(state.seen - cached, state.seen, device=keys[0].device)
            slots, freqs = positions % self.window, -self._rotary(positions)
            keys = tuple(apply_rotary_pos_emb(k.index_select(2, slots), freqs) for k in keys)
            values = tuple(v.index_select(2, slots) for v in values)
        return LayerIntermediates(
            attn_intermediates=[
                Intermediates(cached_kv=(k[..., -cached:, :], v[..., -cached:, :]))
                for k, v in zip(keys, values, strict=True)
            ],
            cache_length=cached,
        )

    def _trimmed_state(self, intermediates: LayerIntermediates, *, seen: int) -> TransformerState:
        """Every layer's last `context_len - 1` keys and values (all a later token can see), as
        x-transformers cached them: views, nothing computed."""
        keep = self.window - 1
        keys, values = [], []
        for inter in intermediates.attn_intermediates:
            k, v = inter.cached_kv
            start = max(k.shape[-2] - keep, 0)
            keys.append(k[..., start:, :])
            values.append(v[..., start:, :])
        return TransformerState(keys=tuple(keys), values=tuple(values), seen=seen)

    def _as_ring(self, state: TransformerState) -> TransformerState:
        """The ring layout of a cache-layout state: keys rotated at their absolute positions and
        placed in their slots (once, at the first `step` after a `forward`)."""
        keys, values = [], []
        for k, v in zip(state.keys, state.values, strict=True):
            kept = k.shape[-2]  # oldest first, un-rotated; the newest is position seen - 1
            positions = torch.arange(state.seen - kept, state.seen, device=k.device)
            slots = positions % self.window
            ring = k.new_zeros(*k.shape[:2], self.window, k.shape[-1])
            keys.append(ring.index_copy(2, slots, apply_rotary_pos_emb(k, self._rotary(positions))))
            values.append(ring.index_copy(2, slots, v))
        return TransformerState(keys=tuple(keys), values=tuple(values), seen=state.seen, ring=True)
