"""Training: the LightningCLI over InContextLearner and HistoryDataModule that `zoo fit` runs, and
`build`, which makes the same model, datamodule and trainer from config files and mappings (sweep
trials, benchmarks) without a command line.

Sizes the data decides (observation and action counts, context length, which env) are linked from
the datamodule to the model, never typed twice. Experiments are YAML files in configs/experiments/
that pick a backbone preset: `zoo fit --config configs/experiments/darkroom.yaml`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from datamodules.history import HistoryDataModule
from zoo.checkpoints import AtomicCheckpointIO, check_resumable, read_checkpoint
from zoo.errors import CheckpointError, UsageError, concise
from zoo.model import InContextLearner


class _NoAdverts(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger from every run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdverts())  # the loggers Lightning's messages go to

LINKED_FROM_DATA = (
    "num_observations",
    "observation_factors",
    "num_actions",
    "context_len",
    "env",
    "carry_state",
)
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
        # checkpoints renamed into place on their own file system (a full disk leaves none
        # truncated); one line on a failed write
        # (by class path: a config dumped from it, a trial's fit.yaml, loads again)
        "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO"}],
    }


def callbacks_of(trainer: Trainer) -> list[Callback]:
    """The trainer's callbacks, to read or edit in place (Lightning sets the attribute in its
    callback connector; `Trainer` does not declare it)."""
    return trainer.callbacks  # type: ignore[attr-defined]


class ZooArgumentParser(LightningArgumentParser):
    """Lightning's parser, whose errors are one line (`UsageError`) instead of a usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:  # jsonargparse trying alternatives internally
            return super().error(message, ex)
        raise UsageError(concise(message))


class ZooCLI(LightningCLI):
    """LightningCLI with the data-to-model links of the zoo, and its user errors as one line."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """As LightningCLI's; then a `--ckpt_path` must be a readable `zoo fit` checkpoint
        (before Lightning reads its hyper-parameters)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        # keep only what the resume checks read, not a second copy of the weights
        saved = read_checkpoint(path) if path else None
        self.checkpoint = (
            None
            if saved is None
            else {
                "hyper_parameters": saved["hyper_parameters"],
                "datamodule_hyper_parameters": saved.get("datamodule_hyper_parameters") or {},
            }
        )
        if self.checkpoint is not None and subcommand == "fit":
            # before Lightning puts the checkpoint's model settings over the ones given (it does,
            # silently): the model options given must be the checkpoint's own
            model = self.config[subcommand].get("model")
            check_same_settings(
                str(path),
                "model",
                self.checkpoint["hyper_parameters"],
                model.as_dict() if model else {},
            )

    def instantiate_classes(self) -> None:
        """As LightningCLI's, with a one-line error for a bad argument value."""
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as e:
            raise UsageError(concise(str(e))) from e
        if not self.trainer.loggers:  # `--trainer.logger false`: nothing to monitor the rate into
            callbacks = callbacks_of(self.trainer)
            callbacks[:] = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]

    def before_fit(self) -> None:
        """One run in one place (a lock on its folder); a resumed run must continue on the data it
        was trained on, with the settings it was trained with."""
        if self.trainer.global_rank == 0:  # DDP's other ranks (and nodes) run this command too
            self.run_lock = lock_run_dir(Path(self.trainer.default_root_dir))
        if self.checkpoint is not None:
            path = self.config.fit.ckpt_path
            check_resumable(path, self.checkpoint, self.datamodule)
            check_same_settings(
                path,
                "data",
                self.checkpoint["datamodule_hyper_parameters"],
                self.datamodule.hparams,
            )


RESUMABLE_CHANGES = {
    "model.compile": "a speed switch: the same numbers",
    "data.num_workers": "how batches are loaded, not which",
    "data.path": "the same collection (its fingerprint is checked) in another place",
}
"""Settings a resume may change (and is told so); `trainer.*` (more steps, another logger) too."""
UNCOMPARED = {"model.env", "model.carry_state"}  # linked from the data: checked by check_resumable


def _plain(value: Any) -> str:
    """A setting as comparable text (jsonargparse namespaces, tuples and lists alike; without
    jsonargparse's `__path__` of a value read from a file)."""

    def strip(v: Any) -> Any:
        if hasattr(v, "as_dict"):
            v = v.as_dict()
        if isinstance(v, Mapping):
            return {k: strip(x) for k, x in v.items() if not str(k).startswith("__")}
        if isinstance(v, list | tuple):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(value), sort_keys=True, default=str)


def check_same_settings(
    path: str, section: str, theirs: Mapping[str, Any], ours: Mapping[str, Any]
) -> None:
    """Refuse to resume the checkpoint at `path` with `section` (`model`, `data`) settings other
    than its own, naming the keys; print the changes a resume may make."""
    differ = sorted(
        f"{section}.{key}"
        for key in theirs.keys() & ours.keys()
        if f"{section}.{key}" not in UNCOMPARED and _plain(theirs[key]) != _plain(ours[key])
    )
    refused = [key for key in differ if key not in RESUMABLE_CHANGES]
    if refused:
        raise CheckpointError(
            f"{path} was trained with other settings ({', '.join(refused)} differ): resume with "
            "its own (drop those options), or drop --ckpt_path to start a new run"
        )
    for key in differ:
        print(f"zoo fit: resuming with {key} changed ({RESUMABLE_CHANGES[key]})", file=sys.stderr)


def lock_run_dir(root: Path) -> Any:
    """An exclusive lock on `root` for as long as the returned file stays open: a second `zoo fit`
    on the same folder is refused instead of sharing (and overwriting) the first one's version."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    handle = (root / ".zoo-fit.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(
            f"another zoo fit is running in {root}: give this run its own "
            "--trainer.default_root_dir (or wait for that one to end)"
        ) from None
    return handle


def make_cli(args: list[str], *, run: bool = True) -> ZooCLI:
    """The CLI on `args` (a sub-command and its options); runs it unless `run=False`."""
    # While it runs, sys.argv is the `zoo` command line it was given: Lightning's DDP launcher
    # starts the other ranks by running sys.argv again.
    argv, sys.argv = sys.argv, [sys.argv[0], *args]
    try:
        return ZooCLI(
            model_class=InContextLearner,
            datamodule_class=HistoryDataModule,
            args=None,
            run=run,
            seed_everything_default=0,
            trainer_defaults=trainer_defaults(),
            save_config_kwargs={"overwrite": True},
            parser_class=ZooArgumentParser,
            parser_kwargs={"prog": "zoo", "default_env": False},
        )
    finally:
        sys.argv = argv


ConfigSource = str | Path | Mapping[str, Any]
"""A `zoo fit` config: a YAML file, or a mapping of the same shape (`{"trainer": {"max_steps": 9}}`)."""


def build(configs: Sequence[ConfigSource]) -> ZooCLI:
    """The model, datamodule and trainer `zoo fit --config A --config B ...` would train, from config
    files and mappings applied in order (later ones override earlier ones); nothing is run.
    Read `.model`, `.datamodule`, `.trainer` and `.config` of the result."""
    args: list[str] = []
    for config in configs:  # jsonargparse's --config takes a file or the text of one
        text = json.dumps(config) if isinstance(config, Mapping) else str(config)
        args += ["--config", text]
    return make_cli(args, run=False)
