"""Extending the zoo is the same shape for every kind of part: one class, one registration.

A toy backbone, a toy task family and a toy kind of study are registered from fixtures (and
unregistered afterwards, so the registry-driven tests elsewhere never see them) and then used
through the paths the shipped members take: the backbone contract and `zoo fit`'s builder, a
collection and in-context evaluation on the family, `zoo sweep`'s study plumbing. A toy training
objective, chosen by `class_path` as a backbone is, goes through `zoo fit`, `zoo evaluate` and
`zoo report`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from torch import Tensor, nn
from torch.nn import functional as F

from backbones import BACKBONES, Backbone, State, create_backbone, register_backbone
from cli import main as zoo
from envs.bandit import Bandit
from envs.base import ENV_FAMILIES, make_family, register_env
from sweeps.study import (
    STUDY_KINDS,
    StudyKind,
    create_study,
    load_spec,
    open_storage,
    register_study_kind,
    run_worker,
)
from zoo.objectives import Objective, Shapes


@dataclasses.dataclass
class RunningMeanState(State):
    total: Tensor  # [B, D]: the sum of the projected tokens so far
    count: int = 0


class RunningMean(Backbone[RunningMeanState]):
    """The mean of all tokens so far, through `depth` linear layers: causal, with an O(1) step."""

    def __init__(self, *, d_model: int, depth: int = 1) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.Sequential(*(nn.Linear(d_model, d_model) for _ in range(depth)))

    def init_state(
        self, batch_size: int, *, device: Any = None, dtype: Any = None
    ) -> RunningMeanState:
        return RunningMeanState(torch.zeros(batch_size, self.d_model, device=device, dtype=dtype))

    def forward(
        self, x: Tensor, *, state: RunningMeanState | None = None
    ) -> tuple[Tensor, RunningMeanState]:
        state = state or self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        sums = state.total[:, None] + self.layers(x).cumsum(1)
        counts = state.count + torch.arange(1, x.shape[1] + 1, device=x.device)
        return sums / counts[None, :, None], RunningMeanState(sums[:, -1], state.count + x.shape[1])


@pytest.fixture
def toy_backbone() -> Iterator[str]:
    register_backbone("running_mean")(RunningMean)
    yield "running_mean"
    del BACKBONES["running_mean"]


@pytest.fixture
def toy_family() -> Iterator[str]:
    @register_env("two_armed")
    @dataclasses.dataclass(frozen=True)
    class TwoArmed(Bandit):
        """Bernoulli bandits of two arms."""

        num_arms: int = 2

    yield "two_armed"
    del ENV_FAMILIES["two_armed"]


@dataclasses.dataclass
class GuessConfig:
    """A toy study: guess a number in [low, high]."""

    target: float
    low: float = 0.0
    high: float = 1.0


@pytest.fixture
def toy_study_kind() -> Iterator[str]:
    register_study_kind(
        "guess",
        StudyKind(
            config=GuessConfig,
            sampler=lambda config, stream=0: optuna.samplers.RandomSampler(seed=stream),
            objective=lambda trial, config: (
                -abs(trial.suggest_float("x", config.low, config.high) - config.target)
            ),
        ),
    )
    yield "guess"
    del STUDY_KINDS["guess"]


def test_a_new_backbone_keeps_the_contract_and_trains_through_zoo_fit(
    toy_backbone: str, toy_family: str, tmp_path: Path
) -> None:
    from zoo.collection import CollectConfig, collect
    from zoo.evaluation import run_in_context
    from zoo.training import build

    backbone = create_backbone(toy_backbone, d_model=8, depth=2)
    x = torch.randn(3, 10, 8)
    full, _ = backbone(x)
    head, state = backbone(x[:, :4])
    tail, _ = backbone(x[:, 4:], state=state)
    torch.testing.assert_close(torch.cat([head, tail], 1), full)
    state = backbone.init_state(3)
    steps = []
    for t in range(10):
        y, state = backbone.step(x[:, t], state=state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full)

    # a new family collects through `zoo collect`'s library, a new backbone trains on it
    data = tmp_path / "two_armed"
    collect(
        CollectConfig(env=toy_family, learner="ucb1", num_tasks=4, episodes=30, output=str(data)),
        command="test",
        progress=False,
    )
    cli = build(
        [
            {
                "model": {
                    "backbone": {
                        "class_path": f"{RunningMean.__module__}.RunningMean",
                        "init_args": {"d_model": 8, "depth": 1},
                    },
                    "warmup_steps": 1,
                },
                "data": {"path": str(data), "context_len": 10, "batch_size": 4},
                "trainer": {
                    "max_steps": 2,
                    "logger": False,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "runs"),
                },
            }
        ]
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
    family = make_family(toy_family)
    tasks = family.sample_tasks("test", 3, seed=0)
    rollout = run_in_context(cli.model.eval(), family, tasks, episodes=5, seed=0)
    assert rollout.returns.shape == (3, 5)


def test_a_new_study_kind_runs_from_its_config(toy_study_kind: str, tmp_path: Path) -> None:
    config = tmp_path / "guess.yaml"
    config.write_text(yaml.safe_dump({"study": toy_study_kind, "name": "g", "target": 0.25}))
    spec = load_spec(str(config), kind=None, name=None, storage=f"sqlite:///{tmp_path}/s.db")
    assert isinstance(spec.config, GuessConfig) and spec.config.target == 0.25
    study = create_study(spec, open_storage(spec.storage))
    kind = STUDY_KINDS[spec.kind]
    assert run_worker(study, lambda t: kind.objective(t, spec.config), n_trials=3) == 3
    assert len(study.trials) == 3 and study.best_value <= 0
    assert isinstance(study.pruner, optuna.pruners.NopPruner)  # none given, none used


class ObservationOnly(Objective):
    """A toy objective: clone the action from the observation alone (no previous action or
    reward in the token, so nothing to learn from in context), read out at a temperature, and
    report the policy's entropy beside its loss."""

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def build(self, shapes: Shapes) -> None:
        self.num_actions = shapes.num_actions
        self.embedding = nn.Embedding(shapes.num_observations, shapes.d_model)
        self.out = nn.Linear(shapes.d_model, shapes.num_actions)

    def tokens(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor) -> Tensor:
        return self.embedding(observations.long())

    def act(self, features: Tensor) -> Tensor:
        return self.out(features) / self.temperature

    def loss(self, features: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.act(features)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["actions"].long().flatten())
        policy = torch.distributions.Categorical(logits=logits)
        return loss, {"entropy": policy.entropy().mean()}


def test_a_new_objective_trains_evaluates_and_reports(
    six_task_dataset: Path, tmp_path: Path
) -> None:
    import pandas as pd

    data, runs = six_task_dataset, tmp_path / "runs"
    objective = {"class_path": f"{__name__}.ObservationOnly", "init_args": {"temperature": 0.5}}
    config = tmp_path / "toy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"objective": objective, "warmup_steps": 1},
                "data": {"path": str(data), "context_episodes": 1, "batch_size": 4},
                "trainer": {"max_steps": 3, "val_check_interval": 3, "num_sanity_val_steps": 0},
            }
        )
    )
    fit = ["fit", "--config", str(config), "--model.backbone=configs/backbone/gru-tiny.yaml"]
    fit += [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={runs}",
    ]
    fit += [f"--trainer.default_root_dir={runs}", "--trainer.enable_progress_bar=false"]
    fit += ["--trainer.log_every_n_steps=1", "--data.val_windows=8"]
    fit += [
        "--trainer.callbacks+=zoo.evaluation.InContextEvaluation",
        "--trainer.callbacks.episodes=2",
    ]
    assert zoo(fit) == 0
    (metrics,) = runs.glob("lightning_logs/version_*/metrics.csv")
    logged = pd.read_csv(metrics)
    for key in ("train/loss", "train/entropy", "val/entropy", "val/return_final"):
        assert logged[key].notna().any(), key  # the objective's own metrics, by their names

    (checkpoint,) = runs.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    out = runs / "eval"
    assert zoo(["evaluate", str(checkpoint), "--episodes=2", "--tasks=3", f"--out={out}"]) == 0
    report = tmp_path / "report"
    assert zoo(["report", "--results", str(runs), "--out", str(report), "--reps", "100"]) == 0
    summary = pd.read_csv(report / "tables" / "summary.csv")
    assert list(summary["model.objective"]) == ["ObservationOnly"]  # an axis of the report
