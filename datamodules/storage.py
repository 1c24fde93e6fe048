"""The on-disk format of learning-history datasets: memory-mapped `.npy` shards plus a manifest.

A dataset is a directory:

    collection.json   what is being collected (written first, so a rerun can check it is the same)
    shard-00000/      one sub-directory per shard, renamed into place only once complete:
        observations.npy, actions.npy, ...   one file per `Histories` array (offsets local to the shard)
        shard.json                           the shard's counts and its files' sizes and sha256
    manifest.json     written last (temp file + `os.replace`): its presence means "complete"

Shard directories are written under a temporary name and renamed, so a killed writer leaves either a
whole shard or none; `zoo collect` skips valid shards when rerun, so collection resumes shard by shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from envs.base import Histories

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COLLECTION = "collection.json"
SHARD_META = "shard.json"
VERIFIED = ".verified.json"
"""Checksums already verified, remembered per file with the file's identity (see `ChecksumMemo`)."""

DTYPES: dict[str, np.dtype] = {
    "observations": np.dtype(np.int32),
    "actions": np.dtype(np.int32),
    "rewards": np.dtype(np.float32),
    "done": np.dtype(np.bool_),
    "episode": np.dtype(np.int32),
    "offsets": np.dtype(np.int64),
    "task_index": np.dtype(np.int64),
    "learning_curve": np.dtype(np.float32),
}
"""The fixed dtype of every stored `Histories` array (little-endian on disk, as `np.save` writes)."""


Verify = Literal["size", "checksum"]


class DatasetError(Exception):
    """A dataset on disk is missing, incomplete or damaged; the message says which file and what to do."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any, *, dumps: Callable[[Any], str] | None = None) -> None:
    """Write JSON to `path` so that readers see the old file or the whole new one, never a part;
    `dumps` formats it (default: `json.dumps(obj, indent=1)`)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(dumps(obj) if dumps is not None else json.dumps(obj, indent=1))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path, *, what: str) -> dict[str, Any]:
    """Parse a JSON object, turning every failure into a one-line `DatasetError` naming the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} is missing") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DatasetError(
            f"{path}: {what} is corrupted (not UTF-8 text); "
            "rerun the same `zoo collect` command to rewrite it"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}: {what} is truncated or corrupted (invalid JSON at line {e.lineno}); "
            "rerun the same `zoo collect` command to rewrite it"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path}: {what} is not a JSON object; it was not written by zoo collect"
        )
    return obj


def check_histories(histories: Histories) -> None:
    """Raise ValueError unless the arrays form consistent histories (what the reader relies on)."""
    n, h = histories.num_steps, histories.num_histories
    for name in Histories.PER_STEP:
        if getattr(histories, name).shape != (n,):
            raise ValueError(
                f"Histories.{name} has shape {getattr(histories, name).shape}, not ({n},)"
            )
    offsets = histories.offsets
    if offsets.shape != (h + 1,) or offsets[0] != 0 or offsets[-1] != n:
        raise ValueError(f"Histories.offsets must be [0, ..., {n}] of length {h + 1}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError("Histories.offsets must be non-decreasing")
    if histories.learning_curve.ndim != 2 or len(histories.learning_curve) != h:
        raise ValueError(f"Histories.learning_curve must be [{h}, episodes]")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What `manifest.json` holds: how the dataset was made and what is in it (JSON keys = fields)."""

    format_version: int
    fingerprint: str  # sha256 of the collection's identity (config less output and run options)
    env: str  # registered family name (envs.ENV_FAMILIES)
    env_id: str  # gymnasium id of the plain env, e.g. "zoo/DarkRoom-v0"
    env_params: dict[str, Any]  # the family's full parameters (EnvFamily.params())
    split: str
    mode: str  # "ad" (learning histories) or "expert" (converged / optimal episodes)
    tasks: list[list[Any]]  # the task table: row i is task index i (ints, or floats for bandits)
    learner: str
    learner_params: dict[str, Any]
    seed: int
    num_histories: int
    num_transitions: int
    episodes_per_history: int  # episodes the learner ran (columns of the learning curve)
    keep_every: int  # every k-th episode is stored
    num_shards: int
    shards: list[dict[str, Any]]  # each shard's record: name, counts, files (bytes, sha256, ...)
    command: str
    config: dict[str, Any]  # the full collection config, to rerun it

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, path: Path) -> Manifest:
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(
                f"{path}: dataset format version {version!r}, this icrl-zoo reads version "
                f"{FORMAT_VERSION}; re-collect it with this version's `zoo collect`"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in obj]
        if missing:
            raise DatasetError(
                f"{path}: manifest lacks {missing}; it is damaged, rerun `zoo collect` to rewrite it"
            )
        damaged = "it is damaged, rerun `zoo collect` to rewrite it"
        for field in dataclasses.fields(cls):
            kind = _JSON_TYPES[str(field.type).split("[")[0]]
            value = obj[field.name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise DatasetError(
                    f"{path}: manifest's {field.name!r} is not of type {kind.__name__}; {damaged}"
                )
        manifest = cls(**{name: obj[name] for name in names})
        shard_keys = {"name", "histories", "transitions", "files"}
        try:
            tasks = np.asarray(manifest.tasks)
        except ValueError:
            tasks = np.zeros(0)
        if (
            len(manifest.shards) != manifest.num_shards
            or tasks.ndim != 2
            or len(tasks) == 0
            or tasks.dtype.kind not in "iuf"
            or not all(isinstance(r, dict) and shard_keys <= set(r) for r in manifest.shards)
        ):
            raise DatasetError(
                f"{path}: manifest's shard list or task table is inconsistent; {damaged}"
            )
        return manifest


_JSON_TYPES: dict[str, type] = {"int": int, "str": str, "dict": dict, "list": list}


@dataclasses.dataclass(frozen=True)
class History:
    """One learning history: per-step views into the memory-mapped shard, plus its task."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    done: np.ndarray
    episode: np.ndarray
    task_index: int
    task: np.ndarray
    learning_curve: np.ndarray
