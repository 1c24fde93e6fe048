"""The errors a user can cause, and how the command layer tells them from bugs.

A user error (a missing or damaged file, a bad option value, a checkpoint that does not fit the
data) is printed by `zoo` as one line on stderr with exit code 2; anything else is a bug and keeps
its traceback. `zoo --debug ...` (or `ZOO_DEBUG=1`) shows the traceback of user errors too.
"""

from __future__ import annotations

import errno
import os
import sys


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
    "reporting.data:ReportError",
)
"""Exception classes that are the user's to fix, as `module:class`. A class counts only once its
module is imported (an error cannot come from a module that never ran), so `zoo --help` and
`zoo collect` never import optuna or torch to classify an error."""


WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)
"""The conditions under which a folder cannot take what a command writes: a full disk or quota, a
read-only file system, missing permissions, a path through a file."""


def cannot_write(error: OSError) -> str | None:
    """One line for an `OSError` of `WRITE_ERRNOS`, naming the path and what to do; None for any
    other error (a bug keeps its traceback)."""
    path = error.filename or "a file"
    if error.errno == errno.EEXIST and os.path.isfile(str(path)):  # a folder made through a file
        return f"cannot make the folder {path}: a file of that name is in the way (choose another)"
    if error.errno not in WRITE_ERRNOS:
        return None
    fix = (
        "free space on its device"
        if error.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose a folder you can write to"
    )
    return (
        f"cannot write {path}: {error.strerror} ({fix}); what was completed before is kept, "
        "and the same command run again goes on from there"
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a command asked for it (`cli.main`): an interrupt like Ctrl-C
    (what Optuna fails a running trial on, what unwinds `finally` blocks), with exit code 143."""


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


def concise(message: str, *, limit: int = 300) -> str:
    """A parser's message on one line; of an error under a union of types (a callback list, say)
    only the first alternative's error, which names the bad value."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if "Errors:" in lines:
        first = lines[lines.index("Errors:") + 1].removeprefix("- ")
        key = lines[0] if lines[0].startswith("Parser key") else ""
        lines = [key, first] if key else [first]
    text = " ".join(lines) or "invalid arguments"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
