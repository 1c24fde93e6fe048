"""The backbone contract: every sequence model of the zoo behind one interface.

A backbone maps token embeddings `x: [B, T, D]` to features `y: [B, T, D]`, causally, and carries
a typed `State` so that a sequence can be processed in chunks (`forward` with `state=`) or one token
at a time (`step`) with the same result as one parallel `forward`. The in-context evaluation runs on
`step`; training runs on `forward`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor, nn


class State:
    """Base of every backbone's state: a dataclass with named slots (KV cache, hidden state, ...).

    Subclasses are `@dataclasses.dataclass` classes whose fields are tensors (or None, or plain
    Python numbers such as a position counter). `map_tensors` gives them `detach()` and `to()`.
    A state of a fixed size whose tensors all have the batch at one dimension declares it in
    `batch_dim`; then `where` resets some of its rows (training with a state carried from window
    to window, `model.carry_state`). None (the default): rows cannot be told apart.
    """

    batch_dim: ClassVar[int | None] = None

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> State:
        """A copy of this state with `fn` applied to every tensor field (tuples/lists of tensors too)."""

        def apply(value: Any) -> Any:
            if isinstance(value, Tensor):
                return fn(value)
            if isinstance(value, (tuple, list)):
                return type(value)(apply(v) for v in value)
            if isinstance(value, State):
                return value.map_tensors(fn)
            return value

        assert dataclasses.is_dataclass(self), f"{type(self).__name__} must be a dataclass"
        return dataclasses.replace(
            self, **{f.name: apply(getattr(self, f.name)) for f in dataclasses.fields(self)}
        )

    def detach(self) -> State:
        return self.map_tensors(Tensor.detach)

    def tensors(self) -> dict[str, Any]:
        """The fields, by name (tensors, tuples of tensors, ...): what a checkpoint stores."""
        assert dataclasses.is_dataclass(self), f"{type(self).__name__} must be a dataclass"
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def where(self, rows: Tensor, other: State) -> State:
        """This state with the rows where `rows` (`[B]` bool) is True taken from `other`, a state
        of the same type and shape (e.g. `init_state`: those rows start afresh)."""
        dim = self.batch_dim
        if dim is None:
            raise TypeError(f"{type(self).__name__} has no batch dimension to select rows along")
        if type(other) is not type(self):
            raise TypeError(f"cannot mix a {type(self).__name__} with a {type(other).__name__}")

        def pick(mine: Any, theirs: Any) -> Any:
            if isinstance(mine, Tensor):
                shape = [1] * mine.ndim
                shape[dim] = -1
                return torch.where(rows.view(shape), theirs, mine)
            if isinstance(mine, (tuple, list)):
                return type(mine)(pick(m, t) for m, t in zip(mine, theirs, strict=True))
            return mine

        theirs = other.tensors()
        return self.replace_tensors(
            {name: pick(value, theirs[name]) for name, value in self.tensors().items()}
        )

    def select(self, rows: Tensor) -> State:
        """The state of the batch rows `rows` (`[B']` int64 indices), in that order: the state of
        those sequences alone (the in-context evaluation drops the tasks that have played all
        their episodes). Along `batch_dim`; a state with none raises TypeError unless it says
        where its batch is by overriding this."""
        dim = self.batch_dim
        if dim is None:
            raise TypeError(f"{type(self).__name__} has no batch dimension to select rows along")
        return self.map_tensors(lambda t: t.index_select(dim, rows))

    def replace_tensors(self, fields: dict[str, Any]) -> State:
        """A copy with the named fields replaced (the inverse of `tensors`)."""
        assert dataclasses.is_dataclass(self), f"{type(self).__name__} must be a dataclass"
        return dataclasses.replace(self, **fields)


StateT = TypeVar("StateT", bound=State)


class Backbone(nn.Module, ABC, Generic[StateT]):
    """A causal sequence model over `[B, T, d_model]` with an exact incremental path.

    Generic over its state type: a member is `class GRUBackbone(Backbone[GRUState])`, and its
    `forward` and `step` take and return that state (a bare `Backbone` accepts any `State`).

    Contract, pinned by the registry-driven tests for every registered backbone:
    - `forward(x)` equals `forward(x[:, :t])` followed by `forward(x[:, t:], state=...)`;
    - `forward(x)` equals a loop of `step` over the tokens of `x`, from `init_state`;
    - constructor arguments are keyword-only and typed, so LightningCLI can show and check them.
    """

    name: str = ""  # set by @register_backbone
    d_model: int
    width_args: ClassVar[tuple[str, ...]] = ("d_model",)
    """The constructor arguments that set the model's width, scaled together when a tuner fits a
    parameter budget (every member also takes `depth`, its number of blocks or layers)."""

    @abstractmethod
    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> StateT:
        """The state before the first token."""

    @abstractmethod
    def forward(self, x: Tensor, *, state: StateT | None = None) -> tuple[Tensor, StateT]:
        """Process `x: [B, T, D]` after `state` (None: from scratch). Returns `([B, T, D], state)`."""

    def follow_context(self, context_len: int) -> None:
        """Called once by the learner with its training context (steps per window). A backbone
        with a size that defaults to the training context (the transformer's attention window)
        takes it here; the others ignore it."""

    def step(self, x_t: Tensor, *, state: StateT) -> tuple[Tensor, StateT]:
        """Process one token `x_t: [B, D]`. Members override this with a true O(1)-in-T update."""
        y, state = self.forward(x_t.unsqueeze(1), state=state)
        return y.squeeze(1), state


BackboneT = TypeVar("BackboneT", bound=type[Backbone])

BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str) -> Callable[[BackboneT], BackboneT]:
    """Class decorator: make a `Backbone` subclass available as `create_backbone(name, ...)`."""

    def decorator(cls: BackboneT) -> BackboneT:
        if name in BACKBONES and BACKBONES[name] is not cls:
            raise ValueError(f"backbone {name!r} is already registered by {BACKBONES[name]}")
        if not issubclass(cls, Backbone):
            raise TypeError(f"{cls.__name__} must subclass backbones.Backbone")
        cls.name = name
        BACKBONES[name] = cls
        return cls

    return decorator


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a registered backbone by name with its keyword arguments."""
    if name not in BACKBONES:
        raise KeyError(
            f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES)) or 'none'}"
        )
    return BACKBONES[name](**kwargs)


def count_parameters(module: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
