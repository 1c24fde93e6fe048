"""Configs and storages that are not what they seem: a YAML key given twice is refused with the
key and its lines (never read as its last value), and a status or report on a storage that does
not exist says so and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import main as zoo
from zoo.yaml_keys import DuplicateKeyError, check_unique_keys


def test_a_key_given_twice_is_named_with_its_lines() -> None:
    check_unique_keys("a: 1\nb: {c: 2}\nlist: [{d: 1}, {d: 2}]\n")  # equal keys in two mappings
    with pytest.raises(DuplicateKeyError, match=r"key 'lr' is given twice \(lines 2 and 4\)"):
        check_unique_keys("model:\n  lr: 0.001\n  warmup_steps: 10\n  lr: 0.003\n")
    with pytest.raises(DuplicateKeyError, match="key 'd'"):
        check_unique_keys("list:\n- {d: 1, d: 2}\n")


def test_zoo_fit_and_zoo_sweep_refuse_a_key_given_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dup.yaml"
    config.write_text("model:\n  lr: 0.001\n  lr: 0.003\n")
    assert zoo(["fit", "--config", str(config), "--print_config"]) == 2
    assert "key 'lr' is given twice (lines 2 and 3)" in capsys.readouterr().err
    study = tmp_path / "study.yaml"
    study.write_text("study: ablation\nname: a\nname: b\n")
    assert zoo(["sweep", "status", "--config", str(study)]) == 2
    assert "key 'name' is given twice (lines 2 and 3)" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["sqlite:///", "journal://"])
def test_a_status_or_report_on_a_missing_storage_creates_nothing(
    scheme: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{scheme}{tmp_path / 'typo' / 'sweeps.db'}"
    assert zoo(["sweep", "status", "--name", "x", "--storage", url]) == 2
    assert "give the --storage URL the sweep used" in capsys.readouterr().err
    assert zoo(["report", "--storage", url, "--study", "x", "--out", str(tmp_path / "r")]) == 2
    assert "give the --storage URL the sweep used" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_a_locked_database_says_so_within_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3
    import time

    from sweeps.study import SQLITE_LOCK_SECONDS, open_storage

    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    open_storage(url)  # a study database
    holder = sqlite3.connect(tmp_path / "sweeps.db")
    holder.execute("BEGIN EXCLUSIVE")  # an open sqlite3 shell in a transaction
    started = time.monotonic()
    assert zoo(["sweep", "status", "--name", "x", "--storage", url]) == 2
    assert time.monotonic() - started < 6 * SQLITE_LOCK_SECONDS  # not the minute it waited before
    err = capsys.readouterr().err
    assert "is locked: another process has held it" in err and len(err.strip().splitlines()) == 1
    holder.rollback()
    holder.close()


def test_a_folder_that_cannot_take_a_write_is_one_line_naming_it(tmp_path: Path) -> None:
    import errno

    from zoo.errors import cannot_write

    (tmp_path / "a_file").write_text("")
    full = cannot_write(OSError(errno.ENOSPC, "No space left on device", "runs/x.ckpt"))
    assert full is not None and full.startswith("cannot write runs/x.ckpt: No space left")
    assert "free space on its device" in full
    assert "choose a folder" in str(cannot_write(OSError(errno.EROFS, "Read-only", "/ro/x")))
    in_the_way = cannot_write(OSError(errno.EEXIST, "File exists", str(tmp_path / "a_file")))
    assert in_the_way is not None and "a file of that name is in the way" in in_the_way
    assert cannot_write(OSError(errno.EEXIST, "File exists", str(tmp_path))) is None  # a bug's
    assert cannot_write(OSError(errno.EBADF, "Bad file descriptor")) is None
