"""Random-number states of a run, saved in its checkpoints and restored on a resume, rank by rank:
a resumed run draws what the run would have drawn."""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def rng_states(device: torch.device) -> dict[str, Any]:
    """torch's (CPU, and `device`'s when it is a CUDA device), numpy's and Python's global
    random-number states, as types a `weights_only` checkpoint load accepts."""
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, position, has_gauss, gauss = legacy
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """The inverse of `rng_states` (a CUDA state only onto a CUDA device)."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def gather_from_ranks(value: Any) -> list[Any]:
    """`value` of every rank, by global rank (`[value]` outside a distributed run)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    world = torch.distributed.get_world_size()
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered
