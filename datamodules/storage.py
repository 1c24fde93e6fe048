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

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from envs.base import EnvFamily, Histories, make_family

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


class ChecksumMemo:
    """The files of one dataset whose sha256 was verified, so that a dataset is hashed once, not
    at every `zoo fit`.

    A file counts as verified while its identity (inode, size, mtime and ctime in ns) is the one
    recorded: rewriting or editing it changes its ctime. As git does for its index, a file changed
    within `RACY_SECONDS` of its verification is not remembered (timestamps have a coarse clock, so
    a later edit in the same tick could keep them). The memo lives in the dataset directory
    (`.verified.json`); a read-only dataset is simply verified every time.
    """

    RACY_SECONDS = 2.0

    def __init__(self, root: Path) -> None:
        self.path = root / VERIFIED
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}
        self.entries: dict[str, Any] = entries if isinstance(entries, dict) else {}
        self.changed = False

    @staticmethod
    def identity(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def verified(self, path: Path, sha256: str) -> bool:
        entry = self.entries.get(str(path.relative_to(self.path.parent)))
        return entry == {"sha256": sha256, "identity": self.identity(path)}

    def remember(self, path: Path, sha256: str) -> None:
        identity = self.identity(path)
        if time.time_ns() - max(identity[2], identity[3]) < self.RACY_SECONDS * 1e9:
            return
        self.entries[str(path.relative_to(self.path.parent))] = {
            "sha256": sha256,
            "identity": identity,
        }
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        # a read-only dataset is verified again next time; nothing else changes
        with contextlib.suppress(OSError):
            write_json_atomic(self.path, self.entries)


def check_shard_files(
    shard_dir: Path, record: dict[str, Any], *, verify: Verify, memo: ChecksumMemo | None = None
) -> None:
    """Raise DatasetError unless every file of the shard has its recorded size (and checksum;
    files `memo` remembers as verified and unchanged are not hashed again)."""
    repair = "rerun the same `zoo collect` command to recollect that shard"
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != {f"{key}.npy" for key in DTYPES}:
        raise DatasetError(f"{shard_dir}: the shard's file list is not the expected one; {repair}")
    for file_name, meta in files.items():
        path = shard_dir / file_name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DatasetError(f"{path}: shard file is missing; {repair}") from None
        if size != meta["bytes"]:
            raise DatasetError(
                f"{path}: shard file is {size} bytes, the manifest says {meta['bytes']} "
                f"(truncated or overwritten); {repair}"
            )
        if verify != "checksum" or (memo is not None and memo.verified(path, meta["sha256"])):
            continue
        if sha256_of(path) != meta["sha256"]:
            raise DatasetError(f"{path}: sha256 checksum mismatch (file corrupted); {repair}")
        if memo is not None:
            memo.remember(path, meta["sha256"])


def load_shard(
    shard_dir: Path, record: dict[str, Any], *, verify: Verify, memo: ChecksumMemo | None = None
) -> Histories:
    """Memory-map one shard's arrays as `Histories`, after checking files, dtypes and shapes."""
    check_shard_files(shard_dir, record, verify=verify, memo=memo)
    arrays: dict[str, np.ndarray] = {}
    for key, dtype in DTYPES.items():
        path = shard_dir / f"{key}.npy"
        meta = record["files"][path.name]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DatasetError(
                f"{path}: not a readable .npy file ({e}); rerun the same `zoo collect` command"
            ) from None
        if array.dtype != dtype or list(array.shape) != meta["shape"]:
            raise DatasetError(
                f"{path}: holds {array.dtype}{list(array.shape)}, expected "
                f"{dtype}{meta['shape']}; rerun the same `zoo collect` command"
            )
        arrays[key] = array
    histories = Histories(**arrays)
    try:
        check_histories(histories)
    except ValueError as e:
        raise DatasetError(f"{shard_dir}: inconsistent shard ({e})") from None
    return histories


def read_shard_record(root: Path, index: int) -> dict[str, Any] | None:
    """The `shard.json` of a completed shard directory, or None if that shard was never finished."""
    path = root / shard_name(index) / SHARD_META
    if not path.exists():
        return None
    return read_json(path, what="shard metadata")


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


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write `manifest.json` last, atomically: from here on the dataset reads as complete."""
    write_json_atomic(root / MANIFEST, dataclasses.asdict(manifest))


class HistoryDataset:
    """A dataset opened for reading: all shards memory-mapped, addressed by global history index.

    Per-step arrays stay on disk (pages load on access), so datasets larger than RAM can be read;
    the per-history arrays (task index, learning curve, lengths) are small and held in memory.
    """

    def __init__(self, path: Path, manifest: Manifest, shards: list[Histories]) -> None:
        self.path = path
        self.manifest = manifest
        self.shards = shards
        self.tasks = np.asarray(manifest.tasks)  # int64 (grid cells) or float64 (arm means)
        counts = [s.num_histories for s in shards]
        self._shard_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.task_index = np.concatenate([np.asarray(s.task_index) for s in shards])
        self.learning_curves = np.concatenate([np.asarray(s.learning_curve) for s in shards])
        self.history_lengths = np.concatenate([np.diff(np.asarray(s.offsets)) for s in shards])

    @property
    def num_histories(self) -> int:
        return int(self._shard_starts[-1])

    @property
    def num_steps(self) -> int:
        return int(self.history_lengths.sum())

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def __len__(self) -> int:
        return self.num_histories

    def __reduce__(self) -> tuple[Any, ...]:
        # DataLoader workers get the path and reopen the maps, instead of a pickled copy of the data
        return (open_dataset, (str(self.path),))

    @cached_property
    def family(self) -> EnvFamily:
        """The env family that produced the data, rebuilt from the manifest."""
        try:
            return make_family(self.manifest.env, **self.manifest.env_params)
        except (ValueError, TypeError) as e:
            raise DatasetError(
                f"{self.path / MANIFEST}: cannot rebuild the env family: {e}"
            ) from None

    def locate(self, history: int) -> tuple[int, int]:
        """(shard number, history index within that shard) of a global history index."""
        if not 0 <= history < self.num_histories:
            raise IndexError(f"history {history} out of range [0, {self.num_histories})")
        shard = int(np.searchsorted(self._shard_starts, history, side="right")) - 1
        return shard, history - int(self._shard_starts[shard])

    def history(self, history: int) -> History:
        """Views (no copy) of one history's per-step arrays, with its task and learning curve."""
        shard, local = self.locate(history)
        arrays = self.shards[shard]
        steps = slice(int(arrays.offsets[local]), int(arrays.offsets[local + 1]))
        task_index = int(self.task_index[history])
        return History(
            **{key: getattr(arrays, key)[steps] for key in Histories.PER_STEP},
            task_index=task_index,
            task=self.tasks[task_index],
            learning_curve=self.learning_curves[history],
        )

    def __iter__(self) -> Iterator[History]:
        return (self.history(h) for h in range(self.num_histories))

    def to_histories(self) -> Histories:
        """All shards concatenated in memory (for small datasets and tests)."""
        per_step = {
            k: np.concatenate([getattr(s, k) for s in self.shards]) for k in Histories.PER_STEP
        }
        offsets = np.concatenate([[0], np.cumsum(self.history_lengths)]).astype(np.int64)
        return Histories(
            **per_step,
            offsets=offsets,
            task_index=self.task_index,
            learning_curve=self.learning_curves,
        )

    def size_bytes(self) -> int:
        return sum(f["bytes"] for record in self.manifest.shards for f in record["files"].values())


def open_dataset(path: str | os.PathLike[str], *, verify: Verify = "size") -> HistoryDataset:
    """Open a dataset written by `zoo collect`, validating its manifest and memory-mapping its shards.

    `verify="size"` checks every file's size, dtype and shape (fast); `"checksum"` also its sha256
    (each file once: what was verified is remembered in the dataset, see `ChecksumMemo`).
    """
    if verify not in ("size", "checksum"):
        raise ValueError(f"verify must be 'size' or 'checksum', not {verify!r}")
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: no dataset directory here; create it with `zoo collect --output {root}`"
        )
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        if (root / COLLECTION).exists():
            done = len(list(root.glob("shard-*/" + SHARD_META)))
            raise DatasetError(
                f"{manifest_path}: missing, the collection is unfinished ({done} shard(s) done); "
                "rerun the same `zoo collect` command to finish it"
            )
        raise DatasetError(
            f"{manifest_path}: missing; {root} is not a dataset made by `zoo collect`"
        )
    manifest = Manifest.from_json(read_json(manifest_path, what="manifest"), path=manifest_path)
    memo = ChecksumMemo(root) if verify == "checksum" else None
    shards = []
    for record in manifest.shards:
        if not isinstance(record["name"], str) or Path(record["name"]).name != record["name"]:
            raise DatasetError(f"{manifest_path}: a shard name is not a plain directory name")
        try:
            shard = load_shard(root / record["name"], record, verify=verify, memo=memo)
        except (KeyError, TypeError, AttributeError) as e:  # a record's fields renamed or retyped
            raise DatasetError(
                f"{manifest_path}: the record of {record['name']} is damaged ({type(e).__name__}: "
                f"{e}); rerun `zoo collect` to rewrite it"
            ) from None
        if shard.num_histories != record["histories"] or shard.num_steps != record["transitions"]:
            raise DatasetError(f"{root / record['name']}: shard counts differ from the manifest")
        shards.append(shard)
    dataset = HistoryDataset(root, manifest, shards)
    if (
        dataset.num_histories != manifest.num_histories
        or dataset.num_steps != manifest.num_transitions
    ):
        raise DatasetError(f"{manifest_path}: total counts differ from the shards' counts")
    if len(dataset.task_index) and not (
        dataset.task_index.min() >= 0 and dataset.task_index.max() < dataset.num_tasks
    ):
        raise DatasetError(f"{root}: a history's task index is outside the manifest's task table")
    if memo is not None:
        memo.save()
    return dataset


def check_content(dataset: HistoryDataset) -> None:
    """Raise DatasetError unless every stored value is one the env could have produced.

    Checksums catch damage after collection; this catches values no checksum vouches against (a
    dataset written by other code, or edited along with its manifest): observations and actions
    inside the env's spaces, finite rewards and learning curves, booleans that are 0 or 1, and
    episodes that are consistent (episode indices non-decreasing within a history and within the
    learner's run, a change of index only after a `done`, every history ending with one, no
    episode longer than the env's). Vectorised: it reads every array once.
    """
    family = dataset.family
    episodes = dataset.manifest.episodes_per_history
    for record, shard in zip(dataset.manifest.shards, dataset.shards, strict=True):
        fault = functools.partial(_content_fault, dataset.path / record["name"])
        checks = (
            ("observations", shard.observations, 0, family.num_observations),
            ("actions", shard.actions, 0, family.num_actions),
            ("episode", shard.episode, 0, episodes),
        )
        for name, values, low, high in checks:
            if len(values) and not (values.min() >= low and values.max() < high):
                bad = np.flatnonzero((values < low) | (values >= high))[0]
                raise fault(
                    f"{name}.npy",
                    f"{name}[{bad}] = {values[bad]} is outside [{low}, {high}) of env "
                    f"{family.name!r}",
                )
        for name in ("rewards", "learning_curve"):
            values = np.asarray(getattr(shard, name))
            finite = np.isfinite(values)
            if not finite.all():
                bad = np.argwhere(~finite)[0]
                index = ", ".join(str(i) for i in bad)
                raise fault(f"{name}.npy", f"{name}[{index}] is {values[tuple(bad)]}, not finite")
        done_bytes = np.asarray(shard.done).view(np.uint8)
        if len(done_bytes) and done_bytes.max() > 1:
            raise fault("done.npy", "holds values other than true and false")
        _check_episodes(shard, family.episode_len, fault)


def _content_fault(shard_dir: Path, file: str, what: str) -> DatasetError:
    return DatasetError(
        f"{shard_dir / file}: {what}; re-collect it with `zoo collect` (or restore the original files)"
    )


def history_last_steps(shard: Histories) -> np.ndarray:
    """`[N]` bool: True at the last step of each (non-empty) history of a shard."""
    offsets = np.asarray(shard.offsets)
    last = np.zeros(shard.num_steps, dtype=bool)
    last[offsets[1:][offsets[1:] > offsets[:-1]] - 1] = True
    return last


def _check_episodes(shard: Histories, episode_len: int, fault: Callable[..., DatasetError]) -> None:
    """Episode structure of one shard (see `check_content`)."""
    done = np.asarray(shard.done, dtype=bool)
    episode = np.asarray(shard.episode, dtype=np.int64)
    if len(done) == 0:
        return
    history_end = history_last_steps(shard)
    if not done[history_end].all():
        raise fault("done.npy", "a history does not end with the end of an episode")
    step = np.diff(episode)
    inside = ~history_end[:-1]  # consecutive steps of one history
    if np.any(step[inside] < 0):
        raise fault("episode.npy", "episode indices go backwards within a history")
    changes = step != 0
    if np.any(inside & changes & ~done[:-1]) or np.any(inside & ~changes & done[:-1]):
        raise fault("done.npy", "episode ends do not match the changes of episode index")
    ended = np.flatnonzero(done)
    lengths = np.diff(np.concatenate([[-1], ended]))
    if lengths.max() > episode_len:
        raise fault("done.npy", f"an episode is {lengths.max()} steps, the env's are {episode_len}")
