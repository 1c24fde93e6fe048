"""What code a run ran: the commit of the checkout, the Python files that differ from it, and the
versions of the packages that compute its numbers. A run's record keeps it (`code`), so that a
record rerun to the digit years later says what to check out and install, and a rerun that differs
says whether the code did (`zoo sweep rerun`)."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "numpy",
    "lightning",
    "optuna",
    "flash-linear-attention",
    "mamba-ssm",
    "x-transformers",
    "gymnasium",
    "jsonargparse",
)
"""The distributions whose version can move a recorded number (the rest only move how it is
printed)."""

ROOT = Path(__file__).resolve().parents[1]


def code_version(root: Path = ROOT) -> dict[str, Any]:
    """`{"commit", "changed", "python", "packages"}` of the checkout at `root`: the commit (None
    outside a git checkout or without git), the Python files that differ from it (tracked and
    modified, or new and not ignored; None where there is no commit), and the versions of
    `PACKAGES` installed (an absent one is left out)."""
    commit = _git(root, "rev-parse", "HEAD")
    commit = None if commit is None else commit.strip()
    status = None if commit is None else _git(root, "status", "--porcelain", "--", "*.py")
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "commit": commit,
        # `XY path` lines (a rename: `XY old -> new`)
        "changed": None
        if status is None
        else sorted(line[3:].split(" -> ")[-1] for line in status.splitlines() if line),
        "python": platform.python_version(),
        "packages": packages,
    }


def _git(root: Path, *args: str) -> str | None:
    """`git -C root ARGS`'s output; None where git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """How the code that made a record may differ from `current`, one phrase each: another commit,
    Python files off the commit (then or now: their content is not pinned), another Python or
    package version. Empty where both ran one clean commit on the same versions; a record made
    before records kept `code` says so."""
    if not recorded:
        return ["the record does not say which code made it (recorded before records kept it)"]
    said = []
    if recorded.get("commit") != current.get("commit"):
        said.append(
            f"commit {_short(recorded.get('commit'))} then, {_short(current.get('commit'))} now"
        )
    for when, code in (("then", recorded), ("now", current)):
        if code.get("changed"):
            said.append(f"{len(code['changed'])} Python file(s) off its commit {when}: "
                        + ", ".join(code["changed"]))  # fmt: skip
    if recorded.get("python") != current.get("python"):
        said.append(f"python {recorded.get('python')} then, {current.get('python')} now")
    then, now = recorded.get("packages") or {}, current.get("packages") or {}
    for name in sorted({*then, *now}):
        if then.get(name) != now.get(name):
            said.append(f"{name} {then.get(name, 'absent')} then, {now.get(name, 'absent')} now")
    return said


def _short(commit: str | None) -> str:
    return "unknown" if commit is None else commit[:12]
