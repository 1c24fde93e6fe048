"""A record says what code made it: the commit, the Python files off it and their edits, the
package versions; a rerun says how its code differs from the record's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sweeps.provenance import code_differences, code_version


def git(root: Path, *args: str) -> None:
    """git in `root`, blind to this machine's and this process's git settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=zoo", "-c", "user.email=zoo@example.org", *args],
        check=True, capture_output=True, env=env,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("git") is None, reason="no git on this machine")
def test_the_commit_and_the_python_files_off_it(tmp_path: Path) -> None:
    outside = code_version(tmp_path)  # no checkout: no commit, nothing to be off
    assert (outside["commit"], outside["changed"], outside["edits"]) == (None, None, None)
    assert outside["packages"]["torch"] == torch.__version__
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "old name.py").write_text("w = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    (tmp_path / "lib").mkdir()
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    clean = code_version(tmp_path)
    assert len(clean["commit"]) == 40 and clean["changed"] == [] and clean["edits"] is None
    # a folder inside a checkout is not the checkout: a copy installed there says nothing
    assert code_version(tmp_path / "lib")["commit"] is None
    (tmp_path / "model.py").write_text("x = 2\n")  # edited
    (tmp_path / "new é.py").write_text("y = 1\n")  # new, not ignored, an odd name
    git(tmp_path, "mv", "old name.py", "lib/w.py")  # renamed: the new path only
    (tmp_path / "notes.txt").write_text("b\n")  # not code
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "scratch.py").write_text("z = 1\n")  # ignored
    edited = code_version(tmp_path)
    assert edited["commit"] == clean["commit"]
    assert edited["changed"] == ["lib/w.py", "model.py", "new é.py"]
    (tmp_path / "new é.py").write_text("y = 2\n")  # the same files, other contents
    assert code_version(tmp_path)["edits"] != edited["edits"] is not None


def test_a_rerun_says_how_its_code_differs_from_the_records() -> None:
    code = {
        "commit": "a" * 40,
        "changed": [],
        "edits": None,
        "python": "3.11.2",
        "cuda": None,
        "packages": {"torch": "2.13.0"},
    }
    assert code_differences(code, code) == []
    assert code_differences(None, code) == [
        "the record does not say which code made it (recorded before records kept it)"
    ]
    unknown = {**code, "commit": None}  # no checkout: never "the same commit"
    assert code_differences(unknown, unknown) == [
        "commit unknown then, unknown now: not known to be the same"
    ]
    now = {
        **code,
        "commit": "b" * 40,
        "changed": ["backbones/gru.py"],
        "edits": "0123456789abcdef",
        "cuda": "12.8",
        "packages": {"torch": "2.14.0", "numpy": "2.4.6"},
    }
    assert code_differences(code, now) == [
        f"commit {'a' * 12} then, {'b' * 12} now",
        "0 Python file(s) off the commit then",
        "1 Python file(s) off the commit now: backbones/gru.py",
        "cuda None then, 12.8 now",
        "numpy absent then, 2.4.6 now",
        "torch 2.13.0 then, 2.14.0 now",
    ]
    # the same edits on the same commit are the same code; other edits of the same files are not
    assert code_differences(now, now) == []
    assert code_differences(now, {**now, "edits": "fedcba9876543210"}) == [
        "1 Python file(s) off the commit then: backbones/gru.py",
        "1 Python file(s) off the commit now: backbones/gru.py",
    ]
