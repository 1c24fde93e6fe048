"""Learning-rate schedules of the learner's optimiser: a factor of the peak rate per step
(`torch.optim.lr_scheduler.LambdaLR`)."""

from __future__ import annotations

import math


def warmup_cosine(*, warmup_steps: int, total_steps: int, min_ratio: float):
    """Learning-rate factor per step: linear warm-up to 1, cosine decay to `min_ratio`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def decay_start(total_steps: int, cooldown: float) -> int:
    """The step at which a `wsd` run of `total_steps` begins its decay (the cooldown's steps
    rounded half up)."""
    return total_steps - math.floor(cooldown * total_steps + 0.5)


def warmup_stable_decay(*, warmup_steps: int, total_steps: int, cooldown: float, min_ratio: float):
    """Learning-rate factor per step: linear warm-up to 1, 1 until `decay_start`, then linear
    decay to `min_ratio` at `total_steps` (Hägele et al. 2024, "Scaling laws and compute-optimal
    training beyond fixed training durations": a constant rate with a short cooldown matches a
    cosine to the same end, and runs of several lengths share their stable part)."""
    start = decay_start(total_steps, cooldown)

    def factor(step: int) -> float:
        warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
        progress = min(max(step - start, 0) / max(total_steps - start, 1), 1.0)
        return min(warm, 1.0 - (1.0 - min_ratio) * progress)

    return factor
