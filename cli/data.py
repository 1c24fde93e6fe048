"""`zoo data info PATH [--verify]`: what a dataset holds, and how its source learner learned."""

from __future__ import annotations

from jsonargparse import ActionYesNo, Namespace

from cli import Parser


def parser() -> Parser:
    return Parser(prog="zoo data", description=__doc__)


def subcommands(parser: Parser) -> None:
    commands = parser.add_subcommands(required=True, dest="subcommand")
    info = Parser(description="summarise a dataset and its learning curve")
    info.add_argument("path", help="dataset directory (made by `zoo collect`)")
    info.add_argument(
        "--verify", action=ActionYesNo, default=False, help="also check every file's checksum"
    )
    commands.add_subcommand("info", info, help="summarise a dataset and its learning curve")


def run(options: Namespace, argv: list[str]) -> int:
    from datamodules.reader import open_dataset
    from reporting.dataset import info

    options = options.info
    dataset = open_dataset(options.path, verify="checksum" if options.verify else "size")
    print(info(dataset))
    if options.verify:
        print("checksums   all files match the manifest")
    return 0
