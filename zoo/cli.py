"""`zoo` console script: one entry point, one function per sub-command, imported on demand.

Sub-commands are imported only when run, so `zoo --help` stays fast (no torch import), and adding
a command is one line in COMMANDS.
"""

from __future__ import annotations

import importlib
import sys

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
    lines += ["", "`zoo <command> --help` describes each command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zoo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name = COMMANDS[name][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
