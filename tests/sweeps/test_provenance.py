"""A record says what code made it: the commit, the Python files off it, the package versions;
a rerun says how its code differs from the record's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from sweeps.provenance import code_differences, code_version


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=zoo", "-c", "user.email=zoo@example.org", *args],
        check=True, capture_output=True,
    )  # fmt: skip


def test_the_commit_and_the_python_files_off_it(tmp_path: Path) -> None:
    outside = code_version(tmp_path)  # no checkout: no commit, nothing to be off
    assert outside["commit"] is None and outside["changed"] is None
    assert outside["packages"]["torch"] == torch.__version__
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    clean = code_version(tmp_path)
    assert len(clean["commit"]) == 40 and clean["changed"] == []
    (tmp_path / "model.py").write_text("x = 2\n")  # edited
    (tmp_path / "new.py").write_text("y = 1\n")  # new, not ignored
    (tmp_path / "notes.txt").write_text("b\n")  # not code
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "scratch.py").write_text("z = 1\n")  # ignored
    edited = code_version(tmp_path)
    assert edited["commit"] == clean["commit"]
    assert edited["changed"] == ["model.py", "new.py"]


def test_a_rerun_says_how_its_code_differs_from_the_records() -> None:
    code = {"commit": "a" * 40, "changed": [], "python": "3.11.2", "packages": {"torch": "2.13.0"}}
    assert code_differences(code, code) == []
    assert code_differences(None, code) == [
        "the record does not say which code made it (recorded before records kept it)"
    ]
    now = {
        **code,
        "commit": "b" * 40,
        "changed": ["backbones/gru.py"],
        "packages": {"torch": "2.14.0", "numpy": "2.4.6"},
    }
    assert code_differences(code, now) == [
        f"commit {'a' * 12} then, {'b' * 12} now",
        "1 Python file(s) off its commit now: backbones/gru.py",
        "numpy absent then, 2.4.6 now",
        "torch 2.13.0 then, 2.14.0 now",
    ]
