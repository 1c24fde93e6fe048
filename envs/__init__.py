"""Task families (gymnasium envs, plain and NumPy-vectorised) and vectorised source RL learners."""

from envs.base import ENV_FAMILIES, EnvFamily, Histories, Learner, Split, make_family, register_env

__all__ = [
    "ENV_FAMILIES",
    "EnvFamily",
    "Histories",
    "Learner",
    "Split",
    "make_family",
    "register_env",
]
