"""Recurrent networks from torch: multi-layer GRU and LSTM behind the backbone contract.

The cuDNN / oneDNN kernels of `nn.GRU` and `nn.LSTM` run the whole sequence; the carried hidden
state makes chunked processing and one-token steps exact. When the hidden width differs from
`d_model`, a linear layer maps the last layer's hidden state back to `d_model`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from backbones.base import Backbone, State, StateT, register_backbone


@dataclasses.dataclass
class GRUState(State):
    """The GRU's hidden state."""

    batch_dim = 1

    hidden: Tensor
    """`[depth, B, hidden_size]`."""


@dataclasses.dataclass
class LSTMState(State):
    """The LSTM's hidden and cell states."""

    batch_dim = 1

    hidden: Tensor
    """`[depth, B, hidden_size]`."""
    cell: Tensor
    """`[depth, B, hidden_size]`."""


class _TorchRNN(Backbone[StateT]):
    """A multi-layer torch RNN (`rnn_class`), batch-first, with a projection back to `d_model`."""

    rnn_class: ClassVar[type[nn.GRU] | type[nn.LSTM]]
    width_args = ("d_model", "hidden_size")

    def __init__(
        self,
        *,
        d_model: int,
        hidden_size: int,
        depth: int,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the input and output features.
            hidden_size: width of every layer's hidden (and, for the LSTM, cell) state.
            depth: stacked recurrent layers (`depth`, as every backbone names it).
            dropout: dropout between layers (torch applies none after the last).
        """
        super().__init__()
        for arg, value in (
            ("d_model", d_model),
            ("hidden_size", hidden_size),
            ("depth", depth),
        ):
            if value < 1:
                raise ValueError(f"{self.name}: {arg} must be >= 1, got {value}")
        self.d_model = d_model
        self.hidden_size = hidden_size
        self.depth = depth
        self.rnn = self.rnn_class(
            d_model, hidden_size, num_layers=depth, batch_first=True, dropout=dropout
        )
        self.out = nn.Identity() if hidden_size == d_model else nn.Linear(hidden_size, d_model)

    def _zeros(
        self, batch_size: int, device: torch.device | None, dtype: torch.dtype | None
    ) -> Tensor:
        shape = (self.depth, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device, dtype=dtype)


@register_backbone("gru")
class GRUBackbone(_TorchRNN[GRUState]):
    """Multi-layer GRU (`torch.nn.GRU`), batch-first."""

    rnn_class = nn.GRU

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> GRUState:
        return GRUState(hidden=self._zeros(batch_size, device, dtype))

    def forward(self, x: Tensor, *, state: GRUState | None = None) -> tuple[Tensor, GRUState]:
        hidden = None if state is None else state.hidden
        y, hidden = self.rnn(x, hidden)
        return self.out(y), GRUState(hidden=hidden)


@register_backbone("lstm")
class LSTMBackbone(_TorchRNN[LSTMState]):
    """Multi-layer LSTM (`torch.nn.LSTM`), batch-first."""

    rnn_class = nn.LSTM

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> LSTMState:
        return LSTMState(
            hidden=self._zeros(batch_size, device, dtype),
            cell=self._zeros(batch_size, device, dtype),
        )

    def forward(self, x: Tensor, *, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        carried = None if state is None else (state.hidden, state.cell)
        y, (hidden, cell) = self.rnn(x, carried)
        return self.out(y), LSTMState(hidden=hidden, cell=cell)
