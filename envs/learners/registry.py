"""The learner registry: `@register_learner(name)` on a `Learner` subclass with a `Params` dataclass,
`make_learner(name, num_envs=..., family=..., seed=..., **params)` to build one by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from envs.base import EnvFamily, Learner

LearnerT = TypeVar("LearnerT", bound=type[Learner])

LEARNERS: dict[str, type[Learner]] = {}


def register_learner(name: str) -> Callable[[LearnerT], LearnerT]:
    """Class decorator: make a `Learner` available by name. The class has a dataclass `Params` and
    is built as `cls(num_envs=..., family=..., seed=..., params=Params(...))`."""

    def decorator(cls: LearnerT) -> LearnerT:
        if name in LEARNERS and LEARNERS[name] is not cls:
            raise ValueError(f"learner {name!r} is already registered by {LEARNERS[name]}")
        if not dataclasses.is_dataclass(getattr(cls, "Params", None)):
            raise TypeError(f"learner {name!r} needs a dataclass `Params`")
        cls.name = name
        LEARNERS[name] = cls
        return cls

    return decorator


def make_learner(
    name: str, *, num_envs: int, family: EnvFamily, seed: int, **params: Any
) -> Learner:
    """Build a registered learner, with one-line errors for unknown names, parameters or types."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; known: {', '.join(sorted(LEARNERS))}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    cls = LEARNERS[name]
    params_cls = cls.Params  # type: ignore[attr-defined]  # every registered learner declares its Params dataclass
    hints = typing.get_type_hints(params_cls)
    fields = [f.name for f in dataclasses.fields(params_cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for learner {name!r}; it takes: {fields}")
    for key, value in params.items():
        if not _is_instance(value, hints[key]):
            raise ValueError(
                f"learner {name!r}: parameter {key}={value!r} should be of type {hints[key]}"
            )
    return cls(num_envs=num_envs, family=family, seed=seed, params=params_cls(**params))  # type: ignore[call-arg]  # the Protocol does not type __init__


def _is_instance(value: Any, hint: Any) -> bool:
    """`isinstance` for the simple types of learner parameters (ints count as floats, bools do not
    count as numbers)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is_instance(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
