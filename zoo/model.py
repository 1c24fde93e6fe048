"""The in-context learner: one token per step, an injected backbone, an injected objective.

Step `t` of a history is one token of `(o_t, a_{t-1}, r_{t-1})`. Training runs over windows of
consecutive steps that cross episode boundaries; the objective (`zoo.objectives`) makes the tokens,
the loss of a window and the action logits: by default behaviour cloning, the cross-entropy on
`a_t` (Algorithm Distillation). The first token of a window, or of a stream, has no previous step:
it gets the "no previous action" index and reward 0. Evaluation uses `step`, one token at a time
with the backbone's carried state.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from backbones.base import Backbone, State
from zoo.checkpoints import read_checkpoint
from zoo.errors import CheckpointError, UserError, one_line
from zoo.objectives import BehaviourCloning, Objective, Shapes
from zoo.rng import gather_from_ranks, rng_states, set_rng_states
from zoo.schedules import warmup_cosine, warmup_stable_decay


class InContextLearner(pl.LightningModule):
    """Learning histories through any `Backbone`, by any `Objective` (AD / ED by default)."""

    def __init__(
        self,
        *,
        backbone: Backbone,
        objective: Objective | None = None,
        num_observations: int,
        num_actions: int,
        context_len: int,
        observation_factors: tuple[int, ...] | None = None,
        observation_coding: Literal["factors", "index"] = "factors",
        env: dict[str, Any] | None = None,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 500,
        min_lr_ratio: float = 0.1,
        schedule: Literal["cosine", "wsd"] = "cosine",
        cooldown: float = 0.2,
        embedding_dropout: float = 0.0,
        token_mask: float = 0.0,
        label_smoothing: float = 0.0,
        carry_state: bool = False,
        compile: bool = False,
    ) -> None:
        """
        Args:
            backbone: the sequence model (a `backbones.Backbone`); chosen by `class_path` in YAML.
            objective: what the learner is trained to predict from which tokens, and how it acts
                (a `zoo.objectives.Objective`, by `class_path`); None: behaviour cloning of the
                actions (`zoo.objectives.BehaviourCloning`) with this model's `label_smoothing`.
            num_observations: size of the Discrete observation space (linked from the data).
            num_actions: size of the Discrete action space (linked from the data).
            context_len: steps per training window (linked from the data); `window` evaluation
                feeds exactly this many steps.
            observation_factors: what an observation index is made of, its mixed-radix digits
                (linked from the data: `EnvFamily.observation_factors`, e.g. `(9, 9)` for the
                (row, col) of Dark Room); None: one opaque symbol.
            observation_coding: `factors`: one learned embedding per digit, summed (Dark Room:
                row + column, the (x, y) coordinates the AD paper's agent observes); `index`: one
                learned embedding per observation, no shared structure (an ablation: navigating
                to a held-out goal then needs geometry learned cell by cell).
            env: what the model was trained on: env `name`, its `params`, `episode_len` and the
                `dataset` path (linked from the data); evaluation rebuilds the env from it.
            lr: peak learning rate of AdamW.
            weight_decay: AdamW weight decay, applied to matrices only (not biases or norms).
            betas: AdamW betas.
            warmup_steps: linear warm-up from 0 to `lr`, then the `schedule`'s decay to
                `lr * min_lr_ratio` at the last step of the run (`trainer.max_steps`).
            min_lr_ratio: final learning rate as a fraction of `lr` (1: constant after warm-up).
            schedule: `cosine`: a cosine from `lr` at the end of the warm-up to the last step;
                `wsd` (warm-up, stable, decay): `lr` until the last `cooldown` fraction of the
                run, then a linear decay. Under `wsd` the rate before the decay does not depend
                on the run's length, so a run of `b` steps is a longer run's checkpoint at
                `b * (1 - cooldown)` followed by its own decay: the study's budgets are such
                branches (`zoo.selection.BudgetCheckpoints`).
            cooldown: the fraction of the run the `wsd` decay takes (0.2: the last 20%).
            embedding_dropout: dropout on the token embeddings.
            token_mask: in training, the probability that an input token is masked (its
                embedding replaced by zeros, whole): the AD paper's random masking against
                overfitting the training histories (0.3 there, appendix "Random mask"). Targets
                are never masked.
            label_smoothing: label smoothing of the behaviour-cloning cross-entropy (AD uses it
                on Dark Room Hard): the default objective's; an objective given is set on its own.
            carry_state: carry the backbone's state (detached) from each training window to the
                next of the same batch row, resetting it where a window is `first` of its
                history (linked from `data.carry_state`, whose sampler makes the windows
                consecutive): truncated backpropagation through time. For members whose state has
                a fixed size (not the transformer, whose context is its attention window).
            compile: run the training and validation loss through `torch.compile` (in-context
                evaluation stays eager: its shapes change every step). Same numbers to float
                precision; faster where BENCHMARKS.md says so (the reference transformer on
                CPU), and a compile of tens of seconds at the first step.
        """
        super().__init__()
        _check_arguments(locals())
        # Under LightningCLI the backbone arrives as its config (class_path + init_args) and is
        # kept, so `load_from_checkpoint` rebuilds it; a module built in Python is not a config.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Attribute 'backbone' is an instance")
            self.save_hyperparameters()
        for part in ("backbone", "objective"):
            if isinstance(self.hparams.get(part), nn.Module):
                del self.hparams[part]

        if carry_state:
            if compile:
                raise ValueError(
                    "model.compile does not take the carried state of data.carry_state: "
                    "set model.compile false"
                )
            kind = type(backbone.init_state(1))
            if kind.batch_dim is None:
                raise ValueError(
                    f"data.carry_state needs a member whose state has a fixed size (gru, lstm, "
                    f"mamba, mamba2, linear_attention, simple_gla); {type(backbone).__name__}'s "
                    f"{kind.__name__} has none: drop data.carry_state"
                )
        # (state, last action, last reward) of every batch row after its last training window
        self._carried: tuple[State, Tensor, Tensor] | None = None
        # the random-number states of a resumed checkpoint, applied where the saving run was
        self._resumed_rng: dict[str, Any] | None = None
        self.backbone = backbone
        backbone.follow_context(context_len)  # sizes that default to the training context
        self.num_observations = num_observations
        self.num_actions = num_actions
        self.no_action = num_actions  # index of "no previous action"
        self.context_len = context_len
        self.env = dict(env or {})
        if observation_coding not in ("factors", "index"):
            raise ValueError(
                f"observation_coding must be 'factors' or 'index', got {observation_coding!r}"
            )
        factors: tuple[int, ...] = (num_observations,)
        if observation_coding == "factors" and observation_factors is not None:
            factors = tuple(int(f) for f in observation_factors)
            if min(factors) < 1 or math.prod(factors) != num_observations:
                raise ValueError(
                    f"observation_factors {factors} do not make {num_observations} observations "
                    "(their product must): they come from the data, do not set them by hand"
                )
        self.observation_factors = factors
        # its layers after the backbone's: the parameters' order (and so the optimiser's) and
        # their initial draws are the same for every run of an objective
        if objective is None:
            objective = BehaviourCloning(label_smoothing=label_smoothing)
        self.objective = objective
        self.objective.build(Shapes(backbone.d_model, num_observations, num_actions, factors))
        self.embedding_dropout = nn.Dropout(embedding_dropout)

    # ----------------------------------------------------------------- model
    def previous(self, actions: Tensor, rewards: Tensor) -> tuple[Tensor, Tensor]:
        """`(a_{t-1}, r_{t-1})` for every step of windows `[B, T]`; the first step has none."""
        prev_actions = torch.full_like(actions, self.no_action)
        prev_actions[:, 1:] = actions[:, :-1]
        prev_rewards = torch.zeros_like(rewards)
        prev_rewards[:, 1:] = rewards[:, :-1]
        return prev_actions, prev_rewards

    def embed(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor) -> Tensor:
        """Tokens `[..., d_model]` for `(o_t, a_{t-1}, r_{t-1})` of any leading shape (the
        objective's, through the embedding dropout)."""
        return self.embedding_dropout(
            self.objective.tokens(observations, prev_actions, prev_rewards)
        )

    def forward(
        self,
        observations: Tensor,
        prev_actions: Tensor,
        prev_rewards: Tensor,
        *,
        state: State | None = None,
    ) -> tuple[Tensor, State]:
        """Action logits `[B, T, num_actions]` for tokens `[B, T]`, after `state` (None: fresh)."""
        features, state = self.backbone(
            self.embed(observations, prev_actions, prev_rewards), state=state
        )
        return self.objective.act(features), state

    def initial_state(self, batch_size: int) -> State:
        """The backbone's state before the first token, on the model's device and dtype."""
        # Lightning types `dtype` as `str | torch.dtype`; a module's is always a torch.dtype
        dtype = cast(torch.dtype, self.dtype)
        return self.backbone.init_state(batch_size, device=self.device, dtype=dtype)

    def step(
        self, observation: Tensor, prev_action: Tensor, prev_reward: Tensor, *, state: State
    ) -> tuple[Tensor, State]:
        """One token per sequence, `[B]` each: action logits `[B, num_actions]` and the new state."""
        features, state = self.backbone.step(
            self.embed(observation, prev_action, prev_reward), state=state
        )
        return self.objective.act(features), state

    # -------------------------------------------------------------- training
    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """(the objective's loss, its metrics) of a batch of windows; compiled if `compile`."""
        if not self.hparams.get("compile"):
            return self._window_loss(batch)
        return self._compiled_loss(batch)

    @functools.cached_property
    def _compiled_loss(self) -> Any:
        """`_window_loss` through torch.compile, built at its first use (a plain attribute, not a
        submodule: the checkpoint's state is unchanged)."""
        return torch.compile(self._window_loss)

    def _window_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, metrics, _ = self._sequence_loss(batch)
        return loss, metrics

    def _carried_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """`_window_loss` after each row's carried state (`carry_state`), which it then replaces;
        rows whose window is `first` of its history start from `init_state`."""
        actions = batch["actions"]
        fresh = self.initial_state(len(actions))
        first = batch["first"].bool()
        if self._carried is None or len(self._carried[1]) != len(actions):
            state, first = fresh, torch.ones_like(first)
            last_action = torch.full_like(actions[:, 0], self.no_action)
            last_reward = torch.zeros_like(batch["rewards"][:, 0])
        else:
            carried, last_action, last_reward = self._carried
            state = follow(carried, fresh).where(first, fresh)
        start = (
            torch.where(first, self.no_action, last_action),
            torch.where(first, 0.0, last_reward),
        )
        loss, metrics, state = self._sequence_loss(batch, state=state, start=start)
        self._carried = (state.detach(), actions[:, -1].clone(), batch["rewards"][:, -1].clone())
        return loss, metrics

    def _sequence_loss(
        self,
        batch: dict[str, Tensor],
        *,
        state: State | None = None,
        start: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], State]:
        """(loss, metrics, state after) of windows following `state`, whose first step's
        previous (action, reward) is `start` (None: none, a window on its own)."""
        actions = batch["actions"].long()
        prev_actions, prev_rewards = self.previous(actions, batch["rewards"])
        if start is not None:
            prev_actions[:, 0], prev_rewards[:, 0] = start
        tokens = self.embed(batch["observations"], prev_actions, prev_rewards)
        mask_p = self.hparams.get("token_mask", 0.0)
        if self.training and mask_p > 0:
            keep = torch.rand(tokens.shape[:-1], device=tokens.device) >= mask_p
            tokens = tokens * keep[..., None].to(tokens.dtype)
        features, state = self.backbone(tokens, state=state)
        loss, metrics = self.objective.loss(features, batch)
        return loss, metrics, state

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.hparams.get("carry_state"):
            loss, metrics = self._carried_loss(batch)
        else:
            loss, metrics = self._loss(batch)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"train/loss is {loss.item()} at step {self.global_step}: training diverged "
                "(lower model.lr, or raise model.warmup_steps); the checkpoints written so far "
                "are kept"
            )
        size = len(batch["actions"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, metrics = self._loss(batch)
        size = len(batch["actions"])
        # averaged over every rank's windows (one all-reduce per validation, none in training)
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        for name, value in metrics.items():
            self.log(f"val/{name}", value, batch_size=size, sync_dist=True)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> InContextLearner:
        """Moves and casts (`.to`, `.cuda`, `.double`, ...) take the carried state along: on the
        module's new device, in the dtypes its backbone's `init_state` gives for the new dtype
        (states a member keeps in float32 stay float32)."""
        super()._apply(fn, recurse)
        if self._carried is not None:
            state, actions, rewards = self._carried
            weight = next((p for p in self.parameters() if p.is_floating_point()), None)
            if weight is not None:
                fresh = self.backbone.init_state(
                    len(actions), device=weight.device, dtype=weight.dtype
                )
                self._carried = (
                    follow(state, fresh),
                    actions.to(weight.device),
                    rewards.to(weight.device),
                )
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every rank's random-number states (`rng_states`, a list by global rank) and, with
        `carry_state`, every rank's carried states (`carried_state`, the same): a resumed run
        goes on from them, each rank from its own, and draws what the run would have drawn."""
        mine: dict[str, Any] = {"rng": rng_states(self.device)}
        if self._carried is not None:
            state, actions, rewards = self._carried
            mine["carried"] = {
                "state": state.map_tensors(Tensor.cpu).tensors(),
                "actions": actions.cpu(),
                "rewards": rewards.cpu(),
            }
        ranks = gather_from_ranks(mine)  # a collective: checkpoints are saved on every rank
        checkpoint["rng_states"] = [rank["rng"] for rank in ranks]
        if self._carried is not None:
            checkpoint["carried_state"] = [rank.get("carried") for rank in ranks]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On a resume (a checkpoint restored by a Trainer), this rank's random-number states, set
        at the first training batch (or epoch) after it, and its carried states; a checkpoint
        loaded for evaluation changes no random state. A checkpoint written before objectives
        were a part of their own holds behaviour cloning's layers under their old names."""
        weights = checkpoint.get("state_dict")
        if isinstance(weights, dict) and isinstance(self.objective, BehaviourCloning):
            for key in [k for k in weights if k.startswith(BehaviourCloning.LEGACY)]:
                weights[f"objective.{key}"] = weights.pop(key)
        rank, world = self.global_rank, self._trainer.world_size if self._trainer else 1
        saved_rng = checkpoint.get("rng_states")
        if self._trainer is not None and isinstance(saved_rng, list) and len(saved_rng) == world:
            self._resumed_rng = saved_rng[rank]
        carried = checkpoint.get("carried_state")
        if carried is None or not self.hparams.get("carry_state"):
            return
        if isinstance(carried, dict):  # written before the states were saved per rank
            carried = [carried]
        if len(carried) != world or carried[rank] is None:
            if self._trainer is not None:  # a resume, not a load for evaluation
                warnings.warn(
                    f"the checkpoint holds the carried states of {len(carried)} process(es), "
                    f"this run has {world}: every batch row starts afresh",
                    stacklevel=2,
                )
            self._carried = None
            return
        mine = carried[rank]
        fresh = self.initial_state(len(mine["actions"]))
        self._carried = (
            follow(fresh.replace_tensors(mine["state"]), fresh),
            mine["actions"].to(self.device),
            mine["rewards"].to(self.device),
        )

    def on_train_epoch_start(self) -> None:
        self._restore_rng()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._restore_rng()

    def _restore_rng(self) -> None:
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng, self.device)
            self._resumed_rng = None

    def configure_optimizers(self) -> Any:  # Lightning's optimizer-and-scheduler dict
        hp: Any = self.hparams  # the __init__ arguments, saved by save_hyperparameters
        matrices = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        others = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": matrices, "weight_decay": hp.weight_decay},
                {"params": others, "weight_decay": 0.0},
            ],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "set trainer.max_steps (or max_epochs): the learning-rate schedule needs an end"
            )
        if hp.get("schedule", "cosine") == "wsd":  # checkpoints from before it: cosine
            schedule = warmup_stable_decay(
                warmup_steps=hp.warmup_steps,
                total_steps=int(total),
                cooldown=hp.cooldown,
                min_ratio=hp.min_lr_ratio,
            )
        else:
            schedule = warmup_cosine(
                warmup_steps=hp.warmup_steps, total_steps=int(total), min_ratio=hp.min_lr_ratio
            )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _check_arguments(a: dict[str, Any]) -> None:
    """The learner's `__init__` arguments (`a`, by name) checked before anything is built: one
    line that names the setting and what it must be."""
    backbone, objective = a["backbone"], a["objective"]
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"backbone must be a backbones.Backbone, got {type(backbone).__name__}; "
            "pick one with `--model.backbone configs/backbone/<name>-<size>.yaml`"
        )
    if objective is not None and not isinstance(objective, Objective):
        raise TypeError(
            f"objective must be a zoo.objectives.Objective, got {type(objective).__name__}"
        )
    if objective is not None and a["label_smoothing"]:
        raise ValueError(
            "model.label_smoothing is the default objective's: with model.objective given, "
            "set it in the objective's init_args"
        )
    sizes: tuple[tuple[str, int], ...] = (
        ("num_observations", a["num_observations"]),
        ("num_actions", a["num_actions"]),
        ("context_len", a["context_len"]),
    )
    for name, value in sizes:
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    checks: tuple[tuple[str, Any, bool, str], ...] = (
        ("lr", a["lr"], a["lr"] > 0, "> 0"),
        ("weight_decay", a["weight_decay"], a["weight_decay"] >= 0, ">= 0"),
        ("betas", a["betas"], all(0 <= b < 1 for b in a["betas"]), "in [0, 1)"),
        ("warmup_steps", a["warmup_steps"], a["warmup_steps"] >= 0, ">= 0"),
        ("min_lr_ratio", a["min_lr_ratio"], 0 <= a["min_lr_ratio"] <= 1, "in [0, 1]"),
        ("schedule", a["schedule"], a["schedule"] in ("cosine", "wsd"), "cosine or wsd"),
        ("cooldown", a["cooldown"], 0 < a["cooldown"] <= 1, "in (0, 1]"),
        ("embedding_dropout", a["embedding_dropout"], 0 <= a["embedding_dropout"] < 1, "in [0, 1)"),
        ("token_mask", a["token_mask"], 0 <= a["token_mask"] < 1, "in [0, 1)"),
        ("label_smoothing", a["label_smoothing"], 0 <= a["label_smoothing"] < 1, "in [0, 1)"),
    )
    for name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"model.{name} must be {rule}, got {value}")


class TrainingDiverged(UserError, FloatingPointError):
    """The loss stopped being a number: a setting to change, not a bug to trace."""


def follow(state: State, like: State) -> State:
    """`state` on the device of `like` (a fresh state of the same type) and in its dtypes, tensor
    by tensor; integer tensors keep their dtype."""

    def cast(mine: Any, theirs: Any) -> Any:
        if isinstance(mine, Tensor) and isinstance(theirs, Tensor):
            dtype = theirs.dtype if mine.is_floating_point() else mine.dtype
            return mine.to(device=theirs.device, dtype=dtype)
        if isinstance(mine, (tuple, list)):
            return type(mine)(cast(m, t) for m, t in zip(mine, theirs, strict=True))
        return mine

    theirs = like.tensors()
    return state.replace_tensors({k: cast(v, theirs[k]) for k, v in state.tensors().items()})


def load_learner(
    path: str,
    *,
    map_location: str | torch.device = "cpu",
    backbone: nn.Module | None = None,
    objective: Objective | None = None,
) -> InContextLearner:
    """A trained learner from a checkpoint, in eval mode. `backbone` (and `objective`, where it
    was not the default) are needed only for models built in Python rather than from a config
    (their checkpoint holds no config of them)."""
    read_checkpoint(path)  # a clear error for a missing, damaged or foreign file
    extra: dict[str, Any] = {} if backbone is None else {"backbone": backbone}
    if objective is not None:
        extra["objective"] = objective
    try:
        model = InContextLearner.load_from_checkpoint(
            path, map_location=map_location, weights_only=True, **extra
        )
    except TypeError as e:
        if "backbone" not in str(e):
            raise
        raise CheckpointError(
            f"{path}: the checkpoint holds no backbone config (the model was built in Python, "
            "not by `zoo fit`); pass the backbone module to load it"
        ) from None
    except RuntimeError as e:  # the state does not fit the model its hyper-parameters build
        hint = (
            "; an objective built in Python is not in its config: pass it as `objective=`"
            if objective is None and "objective." in str(e)
            else ""
        )
        raise CheckpointError(
            f"{path}: its weights do not fit its own config ({e}){hint}"
        ) from None
    except Exception as e:  # jsonargparse refusing the recorded backbone config
        if "is not accepted" not in str(e):
            raise
        renamed = " (the GRU and LSTM's `num_layers` is `depth` since 2026-12-01)"
        raise CheckpointError(
            f"{path}: its backbone config does not fit this version of the zoo: "
            f"{one_line(e).split(': ', 2)[-1]}{renamed if 'num_layers' in str(e) else ''}; "
            "retrain it, or build the backbone in Python and pass it as `backbone=`"
        ) from None
    return model.eval()
