"""Optuna studies over the zoo: the architecture x context-length ablation and per-backbone tuning."""
