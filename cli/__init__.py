"""`zoo`: the command layer. It parses options, calls the library, prints; the library below it
takes settings objects and configs, not command lines.

Every sub-command is a module of this package registered in COMMANDS. A module builds its
jsonargparse parser (`parser()`; its own sub-commands, if any, in `subcommands(parser)`) and runs
on what it parsed (`run(config, argv)`), except `fit` and
`validate`, whose parser is LightningCLI's own (also jsonargparse). The `zoo` parser registers them
all as jsonargparse sub-commands, but only the module of the command being run is imported, so
`zoo --help` stays fast (no torch import).

    zoo <command> --help      every option of a command, with its default
    zoo --debug <command> ... the traceback behind an error (or ZOO_DEBUG=1)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import sys
from typing import Any, TypeVar

from jsonargparse import ArgumentParser, Namespace, get_loader, set_loader, set_parsing_settings

from zoo.errors import (
    Terminated,
    UsageError,
    cannot_write,
    concise,
    is_user_error,
    one_line,
)
from zoo.yaml_keys import DuplicateKeyError, refusing_duplicates


@dataclasses.dataclass(frozen=True)
class Command:
    """A registered sub-command: the module that implements it and its one-line help."""

    module: str
    help: str
    lightning: bool = False
    """Parsed by LightningCLI (`zoo fit`, `zoo validate`): the module's function of the command's
    name takes the rest of the command line."""


COMMANDS: dict[str, Command] = {}
SettingsT = TypeVar("SettingsT")


def register_command(name: str, command: Command) -> None:
    """Make `zoo <name>` run `command` (a new command is one module and one call)."""
    if name in COMMANDS and COMMANDS[name] != command:
        raise ValueError(f"command {name!r} is already registered by {COMMANDS[name]}")
    COMMANDS[name] = command


register_command(
    "collect",
    Command("cli.collect", "record learning histories of a source RL learner into a dataset"),
)
register_command("data", Command("cli.data", "inspect a dataset (`zoo data info PATH`)"))
register_command(
    "backbones", Command("cli.backbones", "list registered backbones and their presets' sizes")
)
register_command(
    "fit", Command("cli.fit", "train an in-context learner (LightningCLI)", lightning=True)
)
register_command(
    "validate", Command("cli.fit", "validate a checkpoint (LightningCLI)", lightning=True)
)
register_command(
    "evaluate",
    Command("cli.evaluate", "in-context evaluation of a checkpoint on held-out tasks"),
)
register_command(
    "run",
    Command("cli.run", "one run end to end under a protocol: fit, select, play, record"),
)
register_command(
    "sweep", Command("cli.sweep", "run an Optuna study (ablation, tuning), show or export it")
)
register_command(
    "report", Command("cli.report", "the ablation report (HTML, Markdown, figures, CSV)")
)


# options of a dataclass take their help from the field's docstring
set_parsing_settings(docstring_parse_attribute_docstrings=True)
# a config (or a --config file, or YAML given on the command line) with a key given twice is an
# error naming the key and its lines, not its last value
set_loader("yaml", refusing_duplicates(get_loader("yaml")), exceptions=(DuplicateKeyError,))


class Parser(ArgumentParser):
    """jsonargparse's parser that raises its errors (`argparse.ArgumentError`, which `main` prints
    as one line) instead of printing the usage and exiting; `--help` lists every option with its
    default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exit_on_error", False)
        super().__init__(*args, **kwargs)


def settings_of(cls: type[SettingsT], options: Namespace) -> SettingsT:
    """The settings dataclass `cls` from parsed options that `add_class_arguments(cls)` made."""
    return cls(**{field.name: options[field.name] for field in dataclasses.fields(cls)})  # type: ignore[arg-type]  # cls is a dataclass type (the callers pass one)


def parser(name: str) -> Parser:
    """The `zoo` parser with every command registered as a sub-command; only `name`'s is built
    in full (the others are named, with their help, so that `zoo --help` lists them)."""
    top = Parser(prog="zoo", description=__doc__.split("\n\n")[0])
    commands = top.add_subcommands(required=True, dest="command")
    for command_name, command in COMMANDS.items():
        module = None
        if command_name == name and not command.lightning:
            module = importlib.import_module(command.module)
        sub = module.parser() if module else Parser(description=command.help)
        commands.add_subcommand(command_name, sub, help=command.help)
        if module is not None and hasattr(module, "subcommands"):
            module.subcommands(sub)  # jsonargparse adds levels of sub-commands in order
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (a bad option, a damaged dataset or checkpoint, ...) is one
    line on stderr and exit code 2; a bug keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("ZOO_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    name = argv[0] if argv else ""
    # SIGTERM (a scheduler, a session's end) interrupts like Ctrl-C: whatever is being written is
    # abandoned by its atomic writer, a sweep fails its running trial; exit 143, one line.
    # Lightning's commands install their own handler while training (SIGTERMException, below).
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        command = COMMANDS.get(name)
        if command is not None and command.lightning:
            function = getattr(importlib.import_module(command.module), name)
            return int(function(argv[1:]) or 0)
        if not argv:
            parser(name).print_help()
            return 0
        config: Namespace = parser(name).parse_args(argv)
        module = importlib.import_module(COMMANDS[config.command].module)
        return int(module.run(config[config.command], argv[1:]) or 0)
    except Terminated:
        return _stopped(name, "SIGTERM", 143)
    except KeyboardInterrupt:
        return _stopped(name, "Ctrl-C (SIGINT)", 130)
    except SystemExit as error:
        # Lightning ends `fit` on SIGTERM with SIGTERMException, a SystemExit of code None (0),
        # and on Ctrl-C with sys.exit(1) while handling the KeyboardInterrupt: neither finished
        if type(error).__name__ == "SIGTERMException":
            return _stopped(name, "SIGTERM", 143)
        if stop := _interrupted(error):
            return _stopped(name, *stop)
        raise
    except (argparse.ArgumentError, UsageError) as error:
        if debug:
            raise
        return _refuse(name, concise(str(error)), usage=True)
    except OSError as error:  # a full disk, a read-only folder: the machine's, not a bug
        if stop := _interrupted(error):
            return _stopped(name, *stop)
        line = None if debug else cannot_write(error)
        if line is None:
            if debug or not is_user_error(error):
                raise
            line = one_line(error)
        return _refuse(name, line, usage=False)
    except Exception as error:
        # a signal in the middle of a write (torch.save's zip writer) can surface as the
        # writer's own error, raised while the interrupt was being handled: it is the interrupt
        if stop := _interrupted(error):
            return _stopped(name, *stop)
        if debug or not is_user_error(error):
            raise
        return _refuse(name, one_line(error), usage=False)
    finally:
        signal.signal(signal.SIGTERM, previous)  # a caller in the same process gets its own back


def _interrupted(error: BaseException) -> tuple[str, int] | None:
    """(how, exit code) when `error` was raised while a SIGTERM or a Ctrl-C was being handled
    (anywhere in its chain of contexts), else None."""
    seen: BaseException | None = error.__context__
    while seen is not None:
        if isinstance(seen, Terminated):
            return "SIGTERM", 143
        if isinstance(seen, KeyboardInterrupt):
            return "Ctrl-C (SIGINT)", 130
        seen = seen.__context__
    return None


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _stopped(name: str, how: str, code: int) -> int:
    prefix = f"zoo {name}" if name in COMMANDS else "zoo"
    print(
        f"{prefix}: stopped by {how} before it finished; what it had completed is kept "
        "(rerun the command to go on; `zoo fit --ckpt_path <a checkpoint of the run>` resumes "
        "training)",
        file=sys.stderr,
    )
    return code


def _refuse(name: str, message: str, *, usage: bool) -> int:
    prefix = f"zoo {name}" if name in COMMANDS else "zoo"
    print(f"{prefix}: error: {message}", file=sys.stderr)
    if usage:
        print(f"see `{prefix} --help` for the options", file=sys.stderr)
    return 2
