"""`zoo collect`: record the learning histories of a source RL learner into a dataset.

    zoo collect --config configs/collect/darkroom.yaml [--output DIR] [--only_shards [0,1]]

Options are the fields of `zoo.collection.CollectConfig` (from `--config FILE.yaml` and/or flags;
flags win). A killed run resumes shard by shard; see `zoo.collection`.
"""

from __future__ import annotations

import shlex

from jsonargparse import ActionConfigFile, ActionYesNo, Namespace

from cli import Parser, settings_of
from zoo.collection import CollectConfig, collect, summary


def parser() -> Parser:
    parser = Parser(prog="zoo collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of the options below")
    parser.add_class_arguments(CollectConfig)
    parser.add_argument(
        "--overwrite",
        action=ActionYesNo,
        default=False,
        help="replace an existing dataset at --output that was made with a different config",
    )
    parser.add_argument("--progress", action=ActionYesNo, default=True, help="show a progress bar")
    return parser


def config_of(options: Namespace) -> CollectConfig:
    """The collection a parsed command line asks for."""
    return settings_of(CollectConfig, options)


def run(options: Namespace, argv: list[str]) -> int:
    config = config_of(options)
    result = collect(
        config,
        command=shlex.join(["zoo", "collect", *argv]),
        overwrite=options.overwrite,
        progress=options.progress,
    )
    print(summary(result, config))
    return 0
