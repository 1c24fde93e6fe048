"""Reading `zoo fit` checkpoints safely: one clear error for a missing, damaged, foreign or
mismatched file, and `weights_only` loading (no pickled code runs)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.errors import CheckpointError, one_line

REQUIRED_HPARAMS = ("num_observations", "num_actions", "context_len")
"""Hyper-parameters every `InContextLearner` checkpoint records (what makes it ours)."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an `InContextLearner` written by `zoo fit`, loaded with
    `weights_only=True`; `CheckpointError` for anything else."""
    file = Path(path)
    if not file.is_file():
        what = "a directory, not a checkpoint file" if file.is_dir() else "no checkpoint file here"
        raise CheckpointError(
            f"{file}: {what}; give a .ckpt written by `zoo fit` "
            "(e.g. runs/lightning_logs/version_0/checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load of arbitrary bytes fails in many ways (pickle, zip, ...)
        reason = f"{type(e).__name__}: {one_line(e).split('. ')[0][:160]}"
        raise CheckpointError(
            f"{file}: not a readable checkpoint (truncated, damaged or not a torch file: {reason}); "
            "use another checkpoint of the run (e.g. its best-*.ckpt) or train again"
        ) from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or not isinstance(hparams, dict)
        or any(name not in hparams for name in REQUIRED_HPARAMS)
    ):
        raise CheckpointError(
            f"{file}: a torch file, but not a checkpoint of `zoo fit` (no in-context learner's "
            "state and hyper-parameters in it)"
        )
    return checkpoint


def check_resumable(path: str | Path, checkpoint: dict[str, Any], data: Any) -> None:
    """Refuse to resume `checkpoint` on a datamodule whose env, spaces or dataset differ."""
    hparams = checkpoint["hyper_parameters"]
    env = hparams.get("env") or {}
    theirs = {
        "env": env.get("name"),
        "env parameters": env.get("params"),
        "observations": hparams["num_observations"],
        "actions": hparams["num_actions"],
    }
    ours = {
        "env": data.env["name"],
        "env parameters": data.env["params"],
        "observations": data.num_observations,
        "actions": data.num_actions,
    }
    for what, value in theirs.items():
        if value is not None and value != ours[what]:
            raise CheckpointError(
                f"{path} was trained on {what} {value!r}, the data at {data.path} has "
                f"{ours[what]!r}: resume it on its own dataset ({env.get('dataset')}), or drop "
                "--ckpt_path to start a new run"
            )
    fingerprint = env.get("fingerprint")
    if fingerprint is not None and fingerprint != data.env["fingerprint"]:
        raise CheckpointError(
            f"{path} was trained on another collection of {env.get('name')!r} (dataset "
            f"{env.get('dataset')}), not {data.path}: resume it on that dataset, or drop "
            "--ckpt_path to start a new run"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic on the target's own file system: the checkpoint is
    written to a temporary name beside its target and renamed over it when complete (Lightning's
    own stages it in the system temp folder and copies it across file systems, which a full disk
    leaves truncated under the final name). A failed write removes its partial file and says in
    one line what to free or fix; the checkpoints written before are untouched."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                torch.save(checkpoint, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            what = {
                errno.ENOSPC: "no space left on the device",
                errno.EDQUOT: "the disk quota is exhausted",
                errno.EACCES: "permission denied",
                errno.EROFS: "the file system is read-only",
            }.get(error.errno or 0, one_line(error))
            raise CheckpointError(
                f"cannot write checkpoint {target}: {what}; free space or choose a writable "
                "--trainer.default_root_dir, then resume with --ckpt_path <the run's last "
                "checkpoint> (those written before are intact)"
            ) from None
