"""Task families (gymnasium envs, plain and NumPy-vectorised) and vectorised source RL learners.

Importing the package registers every family (`ENV_FAMILIES`) and its gymnasium ids (`zoo/...`).
"""

# The family modules are imported for their registrations (by name, and with gymnasium).
from envs import bandit, dark_room, key_to_door
from envs.base import ENV_FAMILIES, EnvFamily, Histories, Learner, Split, make_family, register_env
from envs.vector import TaskVectorEnv

__all__ = [
    "ENV_FAMILIES",
    "EnvFamily",
    "Histories",
    "Learner",
    "Split",
    "TaskVectorEnv",
    "bandit",
    "dark_room",
    "key_to_door",
    "make_family",
    "register_env",
]
