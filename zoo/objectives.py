"""What an in-context learner reads, is trained to predict and acts on: its objective.

The learner (`zoo.model.InContextLearner`) owns what every objective shares: the backbone, the
stream of `(o_t, a_{t-1}, r_{t-1})` it is given (in training windows of a history, in evaluation
one step at a time), the optimiser and its schedule, carried states and checkpoints. An
`Objective` owns the rest: the layers that turn a step into a token, the targets and loss of a
window, and the action logits the learner plays in context. It is chosen like a backbone, by
`class_path` (`--model.objective zoo.objectives.BehaviourCloning`); a new one is one class
(`tests/test_extending.py` trains, evaluates and reports a toy).

`BehaviourCloning` is Algorithm Distillation's (and Expert Distillation's: the same objective on
other data): the token sums embeddings of the observation, the previous action and the previous
reward; the target is the action taken, its loss the cross-entropy.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What an objective's layers are sized by, from the backbone and the data."""

    d_model: int  # the backbone's token width
    num_observations: int  # size of the Discrete observation space
    num_actions: int  # size of the Discrete action space; index `num_actions` is "no action"
    # the mixed-radix digits of an observation index (e.g. (9, 9): Dark Room's row and column),
    # or `(num_observations,)` for one opaque symbol (the learner's `observation_coding`)
    observation_factors: tuple[int, ...]


class Objective(nn.Module):
    """Tokens, loss and action logits of an in-context learner. Subclasses make their layers in
    `build` (called once by the learner, after its backbone, with sizes that come from the data),
    not in `__init__`, whose arguments are the objective's settings (its `init_args` in YAML)."""

    def build(self, shapes: Shapes) -> None:
        raise NotImplementedError

    def tokens(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor) -> Tensor:
        """Tokens `[..., d_model]` of steps `(o_t, a_{t-1}, r_{t-1})` of any leading shape."""
        raise NotImplementedError

    def act(self, features: Tensor) -> Tensor:
        """Action logits `[..., num_actions]` from the backbone's features of the same steps."""
        raise NotImplementedError

    def loss(self, features: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of windows `batch` (`observations`, `actions`, `rewards` `[B, T]`,
        ...) from the backbone's features `[B, T, d_model]` of their tokens, and named metrics
        (scalars) that are logged as `train/<name>` and `val/<name>`."""
        raise NotImplementedError


class BehaviourCloning(Objective):
    """Predict the action the source took, `a_t`, from the history up to `o_t` (AD and ED)."""

    _offset: Tensor  # a buffer: each observation factor's first row in the embedding table

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        """
        Args:
            label_smoothing: label smoothing of the cross-entropy (AD uses it on Dark Room Hard);
                the learner's `model.label_smoothing` sets it when no objective is given.
        """
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def build(self, shapes: Shapes) -> None:
        factors = shapes.observation_factors
        # digit i of an observation sits at row `offset[i] + digit` of the one embedding table
        offset = [sum(factors[:i]) for i in range(len(factors))]
        self.observation_factors = factors
        self.num_actions = shapes.num_actions
        self.register_buffer("_offset", torch.tensor(offset), persistent=False)
        self.observation_embedding = nn.Embedding(sum(factors), shapes.d_model)
        self.action_embedding = nn.Embedding(shapes.num_actions + 1, shapes.d_model)
        self.reward_projection = nn.Linear(1, shapes.d_model)
        self.head = nn.Sequential(
            nn.LayerNorm(shapes.d_model), nn.Linear(shapes.d_model, shapes.num_actions)
        )

    def tokens(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor) -> Tensor:
        digits = torch.stack(torch.unravel_index(observations.long(), self.observation_factors), -1)
        digits = digits + self._offset
        return (
            self.observation_embedding(digits).sum(-2)
            + self.action_embedding(prev_actions.long())
            + self.reward_projection(
                prev_rewards.to(self.reward_projection.weight.dtype)[..., None]
            )
        )

    def act(self, features: Tensor) -> Tensor:
        return self.head(features)

    def loss(self, features: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        actions = batch["actions"].long()
        logits = self.head(features)
        loss = F.cross_entropy(
            logits.reshape(-1, self.num_actions),
            actions.reshape(-1),
            label_smoothing=self.label_smoothing,
        )
        return loss, {"action_acc": (logits.argmax(-1) == actions).float().mean()}

    # the learner's layers before objectives were a part of their own (2026-12-07): the names
    # its checkpoints from then hold, read back under `objective.`
    LEGACY = ("observation_embedding.", "action_embedding.", "reward_projection.", "head.")
