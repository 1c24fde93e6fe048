"""`zoo fit` and `zoo validate`: LightningCLI over InContextLearner and HistoryDataModule
(`zoo.training`), options as LightningCLI spells them (`--config`, `--model.*`, `--data.*`,
`--trainer.*`, `--ckpt_path`); `zoo fit --help` lists them all."""

from __future__ import annotations

from zoo.training import make_cli


def fit(argv: list[str]) -> int:
    """`zoo fit [--config FILE] [--model.* ...] [--data.* ...] [--trainer.* ...] [--ckpt_path CKPT]`."""
    make_cli(["fit", *argv])
    return 0


def validate(argv: list[str]) -> int:
    """`zoo validate --config FILE --ckpt_path CKPT`: validation loss of a checkpoint."""
    make_cli(["validate", *argv])
    return 0
