"""What code a run ran: the commit of the checkout, the Python files that differ from it (and a
digest of their contents), and the versions of the packages that compute its numbers. A run's
record keeps it (`code`), so that a record rerun to the digit years later says what to check out
and install, and a rerun that differs says whether the code did (`zoo sweep rerun`)."""

from __future__ import annotations

import hashlib
import os
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
    "causal-conv1d",
    "triton",
    "einops",
    "x-transformers",
    "gymnasium",
    "jsonargparse",
)
"""The distributions whose version can move a recorded number (the rest only move how it is
printed); an absent one is left out of the record."""

ROOT = Path(__file__).resolve().parents[1]
"""The checkout this library was imported from (a copy installed elsewhere has none)."""


def code_version(root: Path = ROOT) -> dict[str, Any]:
    """What code runs from the checkout at `root`: `commit` (None unless `root` is the top of a git
    checkout and git answers), `changed` (the Python files off the commit: tracked and edited, or
    new and not ignored; None without a commit), `edits` (a digest of those files' differences
    from the commit, None when there are none), `python`, `cuda` (torch's CUDA version, None on
    a CPU build) and `packages` (the versions of `PACKAGES`)."""
    commit, changed, edits = None, None, None
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is not None and Path(top.strip()).resolve() == Path(root).resolve():
        commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    if commit is not None:
        status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "*.py")
        changed = None if status is None else _paths(status)
    if changed:
        digest = hashlib.sha256(
            (_git(root, "diff", "--binary", "HEAD", "--", "*.py") or "").encode()
        )
        for path in changed:  # new files are not in the diff: their contents are
            file = Path(root) / path
            digest.update(path.encode() + b"\0" + (file.read_bytes() if file.is_file() else b""))
        edits = digest.hexdigest()[:16]
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import torch

    return {
        "commit": commit,
        "changed": changed,
        "edits": edits,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "packages": packages,
    }


def _paths(status: str) -> list[str]:
    """The paths of `git status --porcelain=v1 -z` (`XY path\\0`; a rename or copy is followed
    by its old path, which is not in the tree any more)."""
    entries, paths = iter(status.split("\0")), []
    for entry in entries:
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            next(entries, None)
    return sorted(paths)


def _git(root: Path, *args: str) -> str | None:
    """`git -C root ARGS`'s output (never taking the index's lock: workers call it while a person
    commits); None where git is missing or fails. What the environment says of another
    repository (`GIT_DIR`, ...: a hook's) is not passed on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True,
            env=env,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode(errors="surrogateescape")


def code_differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """How the code that made a record may differ from `current`, one phrase each: a commit that
    differs or is not known, other edits off it, another Python, CUDA or package version. Empty
    only where both ran one known commit with the same edits (or none) on the same versions; a
    record made before records kept `code` says so."""
    if not recorded:
        return ["the record does not say which code made it (recorded before records kept it)"]
    said = []
    then, now = recorded.get("commit"), current.get("commit")
    if then is None or now is None:
        said.append(f"commit {_short(then)} then, {_short(now)} now: not known to be the same")
    elif then != now:
        said.append(f"commit {_short(then)} then, {_short(now)} now")
    edits = [(code.get("changed") or [], code.get("edits")) for code in (recorded, current)]
    if edits[0] != edits[1]:
        for when, (changed, _) in zip(("then", "now"), edits, strict=True):
            said.append(f"{len(changed)} Python file(s) off the commit {when}"
                        + (f": {', '.join(changed)}" if changed else ""))  # fmt: skip
    for key in ("python", "cuda"):
        if recorded.get(key) != current.get(key):
            said.append(f"{key} {recorded.get(key)} then, {current.get(key)} now")
    then_packages, now_packages = recorded.get("packages") or {}, current.get("packages") or {}
    for name in sorted({*then_packages, *now_packages}):
        if then_packages.get(name) != now_packages.get(name):
            said.append(
                f"{name} {then_packages.get(name, 'absent')} then, "
                f"{now_packages.get(name, 'absent')} now"
            )
    return said


def _short(commit: str | None) -> str:
    return "unknown" if commit is None else commit[:12]
