"""Reading a dataset of learning histories (the format: `datamodules.storage`): its manifest and
memory-mapped shards, checked by size (and, when asked, by checksum, remembered per file), and the
content checks that catch damage the format cannot."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.storage import (
    COLLECTION,
    DTYPES,
    MANIFEST,
    SHARD_META,
    VERIFIED,
    DatasetError,
    History,
    Manifest,
    Verify,
    check_histories,
    read_json,
    sha256_of,
    shard_name,
    write_json_atomic,
)
from envs.base import EnvFamily, Histories, make_family


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
