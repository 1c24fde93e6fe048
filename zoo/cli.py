"""`zoo` console script: one entry point, one function per sub-command, imported on demand.

Sub-commands are imported only when run, so `zoo --help` stays fast (no torch import), and adding
a command is one line in COMMANDS.
"""

from __future__ import annotations

import importlib
import os
import sys

from zoo.errors import UsageError, is_user_error, one_line

# name -> ("module:function", one-line help). The function takes the rest of the command line
# (`argv` after the command's name) and returns an exit code (None means 0).
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": (
        "zoo.collect:main",
        "record learning histories of a source RL learner into a dataset",
    ),
    "data": ("zoo.data_cli:main", "inspect a dataset: `zoo data info PATH`"),
    "backbones": ("zoo.backbones_cli:main", "list registered backbones and their presets' sizes"),
    "fit": ("zoo.train:fit", "train an in-context learner (LightningCLI)"),
    "validate": ("zoo.train:validate", "validate a checkpoint (LightningCLI)"),
    "evaluate": ("zoo.evaluate:main", "in-context evaluation of a checkpoint on held-out tasks"),
    "sweep": ("zoo.sweep:main", "run an Optuna study (ablation, tuning) or show its progress"),
    "report": ("zoo.report:main", "the ablation report (HTML, Markdown, figures, CSV tables)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: zoo <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "`zoo <command> --help` describes each command's options.",
        "`zoo --debug <command> ...` (or ZOO_DEBUG=1) shows the traceback behind an error.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (a bad option, a damaged dataset or checkpoint, ...) is one
    line on stderr and exit code 2; a bug keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("ZOO_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"zoo: error: unknown command {name!r} (one of: {known})", file=sys.stderr)
        return 2
    module_name, function_name = COMMANDS[name][0].split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        return int(function(rest) or 0)
    except Exception as error:
        if debug or not is_user_error(error):
            raise
        print(f"zoo {name}: error: {one_line(error)}", file=sys.stderr)
        if isinstance(error, UsageError):
            print(f"see `zoo {name} --help` for the options", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
