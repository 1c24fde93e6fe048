"""Writing a dataset of learning histories (the format: `datamodules.storage`): a shard at a time,
each under a temporary name renamed into place once whole, the manifest last."""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.storage import (
    DTYPES,
    MANIFEST,
    SHARD_META,
    Manifest,
    _fsync_dir,
    check_histories,
    sha256_of,
    shard_name,
    write_json_atomic,
)
from envs.base import Histories


def write_shard(
    root: Path,
    *,
    index: int,
    histories: Histories,
    fingerprint: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard atomically (temp directory, fsync, rename); return its manifest record
    (`meta`, e.g. the shard's seeds, is stored in it). A shard already at the final name (an
    invalid one being repaired) is replaced."""
    check_histories(histories)
    name = shard_name(index)
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        return _write_shard_into(tmp, root, name, index, histories, fingerprint, meta)
    except BaseException:  # a full disk, a signal: no half-written shard is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_shard_into(
    tmp: Path,
    root: Path,
    name: str,
    index: int,
    histories: Histories,
    fingerprint: str,
    meta: dict[str, Any] | None,
) -> dict[str, Any]:
    files: dict[str, Any] = {}
    for key, dtype in DTYPES.items():
        array = np.ascontiguousarray(getattr(histories, key), dtype=dtype.newbyteorder("<"))
        path = tmp / f"{key}.npy"
        with open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[path.name] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
            "dtype": dtype.str,
            "shape": list(array.shape),
        }
    record = {
        "name": name,
        "index": index,
        "fingerprint": fingerprint,
        "histories": histories.num_histories,
        "transitions": histories.num_steps,
        **(meta or {}),
        "files": files,
    }
    write_json_atomic(tmp / SHARD_META, record)
    final = root / name
    if final.exists():
        stale = root / f".{name}.stale-{uuid.uuid4().hex[:8]}"
        os.rename(final, stale)
        shutil.rmtree(stale)
    os.rename(tmp, final)
    _fsync_dir(root)
    return record


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write `manifest.json` last, atomically: from here on the dataset reads as complete."""
    write_json_atomic(root / MANIFEST, dataclasses.asdict(manifest))
