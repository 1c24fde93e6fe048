"""Exploration schedules shared by the learners."""

from __future__ import annotations

import numpy as np


def linear_epsilon(
    episodes: np.ndarray, *, start: float, end: float, decay_episodes: int
) -> np.ndarray:
    """Epsilon after `episodes` finished episodes: from `start` down to `end` linearly over
    `decay_episodes` episodes, then `end` (float32, one value per sub-env)."""
    fraction = np.minimum(episodes / max(decay_episodes, 1), 1.0)
    return (start + (end - start) * fraction).astype(np.float32)


def check_epsilon(name: str, *, start: float, end: float, decay_episodes: int) -> None:
    """One-line errors for an epsilon schedule's parameters."""
    if not (0.0 <= end <= 1.0 and 0.0 <= start <= 1.0):
        raise ValueError(f"{name}: eps_start and eps_end must be in [0, 1], got {start}, {end}")
    if decay_episodes < 0:
        raise ValueError(f"{name}: eps_decay_episodes must be >= 0, got {decay_episodes}")
