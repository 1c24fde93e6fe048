"""The errors a user can cause, and how the command layer tells them from bugs.

A user error (a missing or damaged file, a bad option value, a checkpoint that does not fit the
data) is printed by `zoo` as one line on stderr with exit code 2; anything else is a bug and keeps
its traceback. `zoo --debug ...` (or `ZOO_DEBUG=1`) shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn


class UserError(Exception):
    """Bad input from the user: one line that says what to fix; nothing already written is lost."""


class UsageError(UserError):
    """A bad command-line option or value (the hint points at `--help`)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, not a `zoo fit` checkpoint, or not for this data."""


USER_ERRORS: tuple[str, ...] = (
    "zoo.errors:UserError",
    "datamodules.storage:DatasetError",
    "sweeps.study:SweepError",
    "zoo.report_data:ReportError",
)
"""Exception classes that are the user's to fix, as `module:class`. A class counts only once its
module is imported (an error cannot come from a module that never ran), so `zoo --help` and
`zoo collect` never import optuna or torch to classify an error."""


def is_user_error(error: BaseException) -> bool:
    for spec in USER_ERRORS:
        module_name, class_name = spec.split(":")
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


def one_line(message: object) -> str:
    """A message folded onto one line (library messages may wrap)."""
    return " ".join(str(message).split())


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends every option with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or any(action.default is v for v in (None, argparse.SUPPRESS, False)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors raise `UsageError` (one line) instead of printing the usage and
    exiting; `--help` lists every option with its default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)
