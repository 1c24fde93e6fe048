"""Causal transformer: an x-transformers `Decoder` with rotary positions and an attention window.

Each token attends to at most the last `context_len` tokens, itself included
(x-transformers' `attn_max_attend_past = context_len - 1`). The window is switched on only for
sequences longer than it: a training window no longer than the attention window runs SDPA's plain
causal path, with no mask to build or apply (about 10% of the training step on CPU). The incremental path keeps every
layer's keys and values for the last `context_len - 1` tokens (x-transformers' KV cache), so a
stream of any length costs O(context_len) per token and equals the parallel forward with the same
window exactly. It is *not* a recompute over the last `context_len` tokens: with several layers the
receptive field of a sliding window reaches further back (docs/dependencies.md).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from x_transformers import Decoder
from x_transformers.attend import Intermediates
from x_transformers.x_transformers import LayerIntermediates

from backbones.base import Backbone, State, register_backbone


@dataclasses.dataclass
class TransformerState(State):
    """Per attention layer, the keys and values of the last `context_len - 1` tokens.

    Keys are stored before the rotary rotation (x-transformers rotates after reading the cache),
    so positions restart at 0 inside the window; attention with rotary depends only on distances.
    """

    keys: tuple[Tensor, ...]
    """One `[B, heads, L, d_head]` tensor per layer, L <= context_len - 1."""
    values: tuple[Tensor, ...]
    """One `[B, heads, L, d_head]` tensor per layer."""


@register_backbone("transformer")
class TransformerBackbone(Backbone[TransformerState]):
    """Pre-norm causal transformer (x-transformers `Decoder`, SDPA attention, rotary positions).

    `step` is the base class's one-token `forward`: it reads the cache and trims it again.
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
        empty = torch.zeros(batch_size, self.heads, 0, self.d_head, device=device, dtype=dtype)
        return TransformerState(keys=(empty,) * self.depth, values=(empty,) * self.depth)

    def forward(
        self, x: Tensor, *, state: TransformerState | None = None
    ) -> tuple[Tensor, TransformerState]:
        if state is not None and len(state.keys) != self.depth:
            raise ValueError(
                f"transformer: a state of {len(state.keys)} layers for a model of {self.depth}"
            )
        cached = 0 if state is None else state.keys[0].shape[-2]
        window = self.window_for(cached + x.shape[1])
        for attention in self._attentions:
            attention.max_attend_past = window
        if state is None:
            y, intermediates = self.decoder(x, return_hiddens=True)
        else:
            y, intermediates = self.decoder(
                x, cache=self._as_cache(state), cache_age=x.shape[1], return_hiddens=True
            )
        return y, self._trimmed_state(intermediates)

    def window_for(self, keys: int) -> int | None:
        """The attention window for `keys` positions: None (plain causal) when all of them fit."""
        return self.window - 1 if keys > self.window else None

    def _as_cache(self, state: TransformerState) -> LayerIntermediates:
        """The x-transformers cache object for a state (only the fields its decoder reads)."""
        return LayerIntermediates(
            attn_intermediates=[
                Intermediates(cached_kv=(k, v))
                for k, v in zip(state.keys, state.values, strict=True)
            ],
            cache_length=state.keys[0].shape[-2],
        )

    def _trimmed_state(self, intermediates: LayerIntermediates) -> TransformerState:
        """Keep every layer's last `context_len - 1` keys and values: all a later token can see."""
        keep = self.window - 1
        keys, values = [], []
        for inter in intermediates.attn_intermediates:
            k, v = inter.cached_kv
            start = max(k.shape[-2] - keep, 0)
            keys.append(k[..., start:, :])
            values.append(v[..., start:, :])
        return TransformerState(keys=tuple(keys), values=tuple(values))
