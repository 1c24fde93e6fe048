"""`zoo fit` and `zoo validate`: LightningCLI over InContextLearner and HistoryDataModule.

Sizes the data decides (observation and action counts, context length, which env) are linked from
the datamodule to the model, never typed twice. Experiments are YAML files in configs/experiments/
that pick a backbone preset: `zoo fit --config configs/experiments/darkroom_ad.yaml`.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from datamodules.history import HistoryDataModule
from datamodules.storage import DatasetError
from zoo.model import InContextLearner

LINKED_FROM_DATA = ("num_observations", "observation_factors", "num_actions", "context_len", "env")
"""Attributes of the instantiated datamodule passed to the model's arguments of the same name."""


def trainer_defaults() -> dict[str, Any]:
    """Defaults of `--trainer.*` (a config or the command line overrides any of them)."""
    return {
        "default_root_dir": "runs",
        "max_steps": 10_000,
        "val_check_interval": 500,
        "check_val_every_n_epoch": None,  # validate every `val_check_interval` steps, across epochs
        "log_every_n_steps": 25,
        # callbacks given here are added to those a config lists
        "callbacks": [
            # the best weights by validation loss ...
            ModelCheckpoint(
                monitor="val/loss",
                mode="min",
                filename="best-step{step}-val_loss{val/loss:.4f}",
                auto_insert_metric_name=False,
            ),
            # ... and the latest, replaced at every validation (Lightning 2.6's `save_last` with a
            # monitor only refreshes last.ckpt when the monitored value improves)
            ModelCheckpoint(filename="last", enable_version_counter=False),
            LearningRateMonitor(logging_interval="step"),
        ],
    }


class ZooCLI(LightningCLI):
    """LightningCLI with the data-to-model links of the zoo."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        """As LightningCLI's, with a one-line error for a bad dataset or argument value."""
        try:
            super().instantiate_classes()
        except (DatasetError, ValueError) as e:
            self.parser.error(str(e))
        if not self.trainer.loggers:  # `--trainer.logger false`: nothing to monitor the rate into
            self.trainer.callbacks[:] = [
                c for c in self.trainer.callbacks if not isinstance(c, LearningRateMonitor)
            ]


def make_cli(args: list[str], *, run: bool = True) -> ZooCLI:
    """The CLI on `args` (a sub-command and its options); runs it unless `run=False`."""
    # LightningCLI reads `args`; it warns when sys.argv holds the `zoo` command line as well
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return ZooCLI(
            model_class=InContextLearner,
            datamodule_class=HistoryDataModule,
            args=args,
            run=run,
            seed_everything_default=0,
            trainer_defaults=trainer_defaults(),
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "zoo", "default_env": False},
        )
    finally:
        sys.argv = argv


def fit(argv: list[str]) -> int:
    """`zoo fit [--config FILE] [--model.* ...] [--data.* ...] [--trainer.* ...] [--ckpt_path CKPT]`."""
    make_cli(["fit", *argv])
    return 0


def validate(argv: list[str]) -> int:
    """`zoo validate --config FILE --ckpt_path CKPT`: validation loss of a checkpoint."""
    make_cli(["validate", *argv])
    return 0
