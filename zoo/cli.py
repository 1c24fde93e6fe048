"""`zoo` console script: one entry point, one module per sub-command, imported on demand.

Each sub-command is a module with `main(argv: list[str]) -> int | None`, so `zoo --help` stays fast
(no torch import) and adding a command is one line in COMMANDS.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). The module's main(argv) parses the rest of the command line.
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("zoo.collect", "record learning histories of a source RL learner into a dataset"),
    "data": ("zoo.data_cli", "inspect a dataset: `zoo data info PATH`"),
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
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
