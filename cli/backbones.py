"""`zoo backbones`: the registered backbones and every size preset with its real parameter count.

Exit code 1 when a size's presets are further apart than `MAX_SIZE_SPREAD`, when a registered
backbone lacks a preset, or when a preset does not load: the command doubles as a preset check.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from jsonargparse import Namespace

from cli import Parser
from zoo.errors import UsageError


def parser() -> Parser:
    from backbones.presets import PRESET_DIR, SIZES

    parser = Parser(
        prog="zoo backbones",
        description="List registered backbones and the parameter counts of their size presets.",
    )
    parser.add_argument(
        "--size",
        action="append",
        type=str,
        default=None,
        help=f"only this size, one of {', '.join(SIZES)} (repeatable)",
    )
    parser.add_argument("--presets", type=Path, default=PRESET_DIR, help="preset directory")
    return parser


def run(args: Namespace, argv: list[str]) -> int:
    from backbones import BACKBONES
    from backbones.presets import MAX_SIZE_SPREAD, SIZES, find_presets, parameter_count, size_spread

    if not args.presets.is_dir():
        print(f"zoo backbones: no preset directory {args.presets}", file=sys.stderr)
        return 2
    sizes = args.size or list(SIZES)
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        raise UsageError(f"--size {', '.join(unknown)}: not a preset size ({', '.join(SIZES)})")
    problems: list[str] = []

    print("Registered backbones:\n")
    print("| name | class |\n|---|---|")
    for name, cls in sorted(BACKBONES.items()):
        print(f"| {name} | `{cls.__module__}.{cls.__qualname__}` |")

    try:
        presets = find_presets(args.presets)
    except ValueError as error:
        print(f"zoo backbones: {error}", file=sys.stderr)
        return 2
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for preset in presets:
        if preset.size not in sizes:
            continue
        try:
            counts[preset.size][preset.name] = parameter_count(preset.path)
        except ValueError as error:
            problems.append(str(error).splitlines()[0])

    print("\nPresets (configs/backbone/<name>-<size>.yaml):\n")
    print("| size | backbone | parameters | / smallest of size |\n|---|---|---:|---:|")
    for size in sizes:
        missing = sorted(set(BACKBONES) - set(counts[size]))
        problems += [f"backbone {name!r} has no {size} preset" for name in missing]
        if not counts[size]:
            continue
        smallest = min(counts[size].values())
        for name, count in sorted(counts[size].items(), key=lambda item: item[1]):
            print(f"| {size} | {name} | {count:,} | {count / smallest:.3f} |")
    print(f"\nSpread within each size (max / min - 1; allowed: at most {MAX_SIZE_SPREAD:.0%}):\n")
    for size in sizes:
        if not counts[size]:
            continue
        spread = size_spread(list(counts[size].values()))
        verdict = "ok" if spread <= MAX_SIZE_SPREAD else "TOO WIDE"
        print(f"- {size}: {spread:.1%} ({verdict})")
        if spread > MAX_SIZE_SPREAD:
            problems.append(f"{size} presets spread {spread:.1%} > {MAX_SIZE_SPREAD:.0%}")

    for problem in problems:
        print(f"zoo backbones: {problem}", file=sys.stderr)
    return 1 if problems else 0
