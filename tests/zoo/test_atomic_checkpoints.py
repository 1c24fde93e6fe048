"""Checkpoints are written atomically on their own file system: a write that fails (a full disk)
leaves neither a truncated checkpoint under its final name nor a partial file, keeps the
checkpoint already there, and says in one line what to fix."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from zoo.checkpoints import AtomicCheckpointIO
from zoo.errors import CheckpointError


def test_a_checkpoint_is_renamed_into_place(tmp_path: Path) -> None:
    target = tmp_path / "run" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_full_disk_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, target)

    def full(obj: object, file: object) -> None:
        file.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="no space left on the device; free space"):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}  # the previous one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left
