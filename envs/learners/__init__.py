"""Vectorised source RL learners, by name: `make_learner("q_learning", num_envs=..., family=...,
seed=..., **params)`. Each has a typed `Params` dataclass, kept as `learner.params` (for a dataset's
manifest)."""

# The learner modules are imported for their registrations.
from envs.learners import bandits, q_learning
from envs.learners.registry import LEARNERS, make_learner, register_learner

__all__ = ["LEARNERS", "bandits", "make_learner", "q_learning", "register_learner"]
