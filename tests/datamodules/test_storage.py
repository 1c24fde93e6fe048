"""The dataset format: round trip of synthetic histories, and one clear error per kind of damage."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from datamodules.reader import open_dataset
from datamodules.storage import (
    COLLECTION,
    FORMAT_VERSION,
    MANIFEST,
    DatasetError,
    Manifest,
    write_json_atomic,
)
from datamodules.writer import write_manifest, write_shard
from envs.base import Histories

EPISODES = 6


def synthetic_histories(*, num_histories: int, num_tasks: int, seed: int) -> Histories:
    """Histories of random lengths (episodes end early at random), keeping every other episode."""
    rng = np.random.default_rng(seed)
    per_step: dict[str, list[np.ndarray]] = {k: [] for k in Histories.PER_STEP}
    lengths = []
    for _ in range(num_histories):
        kept = range(0, EPISODES, 2)
        episode_lens = rng.integers(1, 5, size=len(kept))
        n = int(episode_lens.sum())
        per_step["observations"].append(rng.integers(0, 81, n))
        per_step["actions"].append(rng.integers(0, 5, n))
        per_step["rewards"].append(rng.random(n))
        per_step["episode"].append(np.repeat(np.asarray(kept), episode_lens))
        per_step["done"].append(np.isin(np.arange(n), np.cumsum(episode_lens) - 1))
        lengths.append(n)
    return Histories(
        observations=np.concatenate(per_step["observations"]).astype(np.int32),
        actions=np.concatenate(per_step["actions"]).astype(np.int32),
        rewards=np.concatenate(per_step["rewards"]).astype(np.float32),
        done=np.concatenate(per_step["done"]),
        episode=np.concatenate(per_step["episode"]).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        task_index=rng.integers(0, num_tasks, num_histories).astype(np.int64),
        learning_curve=rng.random((num_histories, EPISODES)).astype(np.float32),
    )


def write_dataset(
    root: Path, shards: list[Histories], *, tasks: list[list[float]] | None = None
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / COLLECTION, {"fingerprint": "f" * 64})
    records = [
        write_shard(root, index=i, histories=h, fingerprint="f" * 64) for i, h in enumerate(shards)
    ]
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        fingerprint="f" * 64,
        env="dark_room",
        env_id="zoo/DarkRoom-v0",
        env_params={},
        split="train",
        mode="ad",
        tasks=[[t, t + 1] for t in range(3)] if tasks is None else tasks,
        learner="q_learning",
        learner_params={},
        seed=0,
        num_histories=sum(h.num_histories for h in shards),
        num_transitions=sum(h.num_steps for h in shards),
        episodes_per_history=EPISODES,
        keep_every=2,
        num_shards=len(shards),
        shards=records,
        command="test",
        config={},
    )
    write_manifest(root, manifest)


@pytest.fixture
def shards() -> list[Histories]:
    return [synthetic_histories(num_histories=n, num_tasks=3, seed=n) for n in (3, 1, 4)]


@pytest.fixture
def dataset_dir(tmp_path: Path, shards: list[Histories]) -> Path:
    write_dataset(tmp_path / "ds", shards)
    return tmp_path / "ds"


def test_round_trip_is_exact(dataset_dir: Path, shards: list[Histories]) -> None:
    dataset = open_dataset(dataset_dir, verify="checksum")
    assert dataset.num_histories == 8
    assert dataset.tasks.dtype == np.int64
    assert dataset.num_steps == sum(h.num_steps for h in shards)
    for stored, written in zip(dataset.shards, shards, strict=True):
        assert isinstance(stored.observations, np.memmap)
        for key in Histories.PER_STEP + Histories.PER_HISTORY:
            np.testing.assert_array_equal(getattr(stored, key), getattr(written, key))
            assert getattr(stored, key).dtype == getattr(written, key).dtype


def test_float_task_table_round_trips(tmp_path: Path, shards: list[Histories]) -> None:
    tasks = np.random.default_rng(0).random((3, 10))  # bandit arm means
    write_dataset(tmp_path, shards, tasks=tasks.tolist())
    stored = open_dataset(tmp_path).tasks
    assert stored.dtype == np.float64
    np.testing.assert_array_equal(stored, tasks)
    assert open_dataset(tmp_path).history(0).task.shape == (10,)


def test_global_history_index_reaches_each_history(
    dataset_dir: Path, shards: list[Histories]
) -> None:
    dataset = open_dataset(dataset_dir)
    expected = [(s, i) for s, h in enumerate(shards) for i in range(h.num_histories)]
    for index, (s, i) in enumerate(expected):
        history = dataset.history(index)
        steps = slice(shards[s].offsets[i], shards[s].offsets[i + 1])
        for key in Histories.PER_STEP:
            np.testing.assert_array_equal(getattr(history, key), getattr(shards[s], key)[steps])
        assert history.task_index == shards[s].task_index[i]
        np.testing.assert_array_equal(history.task, dataset.tasks[history.task_index])
        np.testing.assert_array_equal(history.learning_curve, shards[s].learning_curve[i])
    with pytest.raises(IndexError):
        dataset.history(dataset.num_histories)
    whole = dataset.to_histories()
    np.testing.assert_array_equal(whole.offsets[-1], dataset.num_steps)
    np.testing.assert_array_equal(whole.rewards, np.concatenate([h.rewards for h in shards]))


def test_pickled_dataset_reopens_the_maps(dataset_dir: Path) -> None:
    dataset = open_dataset(dataset_dir)
    clone = pickle.loads(pickle.dumps(dataset))
    assert isinstance(clone.shards[0].observations, np.memmap)
    np.testing.assert_array_equal(clone.history(5).actions, dataset.history(5).actions)


def test_rewriting_a_shard_replaces_it(tmp_path: Path, shards: list[Histories]) -> None:
    write_dataset(tmp_path, shards)
    write_shard(tmp_path, index=1, histories=shards[1], fingerprint="f" * 64)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    open_dataset(tmp_path, verify="checksum")


def _error(path: Path, verify: str = "size") -> str:
    with pytest.raises(DatasetError) as info:
        open_dataset(path, verify=verify)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_directory(tmp_path: Path) -> None:
    assert "zoo collect --output" in _error(tmp_path / "nope")


def test_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    assert "not a dataset" in _error(tmp_path)


def test_unfinished_collection(dataset_dir: Path) -> None:
    (dataset_dir / MANIFEST).unlink()
    message = _error(dataset_dir)
    assert "unfinished" in message and "3 shard(s) done" in message and MANIFEST in message


def test_truncated_manifest(dataset_dir: Path) -> None:
    text = (dataset_dir / MANIFEST).read_text()
    (dataset_dir / MANIFEST).write_text(text[: len(text) // 2])
    message = _error(dataset_dir)
    assert MANIFEST in message and "truncated or corrupted" in message


def _edit_manifest(root: Path, **changes: object) -> None:
    obj = json.loads((root / MANIFEST).read_text())
    obj.update(changes)
    for key, value in changes.items():
        if value is None:
            del obj[key]
    (root / MANIFEST).write_text(json.dumps(obj))


def test_version_mismatch(dataset_dir: Path) -> None:
    _edit_manifest(dataset_dir, format_version=FORMAT_VERSION + 1)
    assert "format version" in _error(dataset_dir)


def test_missing_manifest_key(dataset_dir: Path) -> None:
    _edit_manifest(dataset_dir, tasks=None)
    assert "lacks ['tasks']" in _error(dataset_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_histories": "8"}, "'num_histories' is not of type int"),
        ({"tasks": [[0, 1], [2]]}, "task table"),
        ({"num_shards": 2}, "shard list"),
    ],
)
def test_damaged_manifest_values(dataset_dir: Path, change: dict, message: str) -> None:
    _edit_manifest(dataset_dir, **change)
    assert message in _error(dataset_dir)


def test_missing_shard_file(dataset_dir: Path) -> None:
    (dataset_dir / "shard-00001" / "actions.npy").unlink()
    message = _error(dataset_dir)
    assert "shard-00001/actions.npy" in message and "missing" in message


def test_missing_shard_directory(dataset_dir: Path) -> None:
    shutil.rmtree(dataset_dir / "shard-00002")
    assert "shard-00002" in _error(dataset_dir)


def test_truncated_shard_file(dataset_dir: Path) -> None:
    path = dataset_dir / "shard-00000" / "rewards.npy"
    path.write_bytes(path.read_bytes()[:-4])
    message = _error(dataset_dir)
    assert "rewards.npy" in message and "truncated" in message


def test_corrupted_shard_file_is_caught_by_checksum(dataset_dir: Path) -> None:
    path = dataset_dir / "shard-00002" / "observations.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    open_dataset(dataset_dir, verify="size")  # same size: only the checksum sees it
    message = _error(dataset_dir, verify="checksum")
    assert "observations.npy" in message and "checksum" in message


def test_corrupted_npy_header(dataset_dir: Path) -> None:
    path = dataset_dir / "shard-00000" / "done.npy"
    data = bytearray(path.read_bytes())
    data[:6] = b"garbag"
    path.write_bytes(bytes(data))
    assert "done.npy" in _error(dataset_dir)


def test_wrong_dtype_in_shard_file(dataset_dir: Path) -> None:
    path = dataset_dir / "shard-00000" / "episode.npy"
    original = np.load(path)
    np.save(path, original.astype(np.float32))  # same size, different dtype
    message = _error(dataset_dir)
    assert "episode.npy" in message and "expected" in message


def test_inconsistent_offsets_are_refused_when_writing(tmp_path: Path) -> None:
    histories = synthetic_histories(num_histories=2, num_tasks=1, seed=0)
    histories.offsets = histories.offsets[:-1]
    with pytest.raises(ValueError, match="offsets"):
        write_shard(tmp_path, index=0, histories=histories, fingerprint="x")
    assert list(tmp_path.iterdir()) == []
