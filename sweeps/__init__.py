"""Optuna studies over the zoo: the architecture x context-length ablation and per-backbone tuning."""

from sweeps import ablation, tune  # noqa: F401  (each registers its kind of study)
