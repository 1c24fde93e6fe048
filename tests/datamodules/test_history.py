"""HistoryDataModule: windows cross episodes but not histories, split by task, ED, shuffle control."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.history import HistoryDataModule
from datamodules.reader import open_dataset
from datamodules.sampling import ConsecutiveSampler
from datamodules.storage import COLLECTION, FORMAT_VERSION, Manifest, write_json_atomic
from datamodules.writer import write_manifest, write_shard
from envs.base import Histories

NUM_TASKS = 6


def synthetic_histories(*, num_histories: int, first_step: int, seed: int) -> Histories:
    """Histories of 8 episodes of random lengths; `rewards` holds each step's global number, so a
    window's content says exactly which stored steps it took."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=(num_histories, 8))
    episode = np.concatenate([np.repeat(np.arange(8), row) for row in lengths])
    ends = np.concatenate([np.cumsum(row) - 1 for row in lengths])
    starts = np.concatenate([[0], np.cumsum(lengths.sum(1))[:-1]])
    done = np.zeros(len(episode), dtype=bool)
    done[np.repeat(starts, 8) + ends] = True
    n = len(episode)
    return Histories(
        observations=rng.integers(0, 81, n).astype(np.int32),
        actions=rng.integers(0, 5, n).astype(np.int32),
        rewards=np.arange(first_step, first_step + n, dtype=np.float32),
        done=done,
        episode=episode.astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths.sum(1))]).astype(np.int64),
        task_index=(np.arange(num_histories) + first_step) % NUM_TASKS,
        learning_curve=np.zeros((num_histories, 8), dtype=np.float32),
    )


def write_dataset(root: Path, shards: list[Histories], *, mode: str = "ad") -> Path:
    root.mkdir(parents=True)
    write_json_atomic(root / COLLECTION, {"fingerprint": "f" * 64})
    records = [
        write_shard(root, index=i, histories=h, fingerprint="f" * 64) for i, h in enumerate(shards)
    ]
    write_manifest(
        root,
        Manifest(
            format_version=FORMAT_VERSION,
            fingerprint="f" * 64,
            env="darkroom",
            env_id="zoo/DarkRoom-v0",
            env_params={},
            split="train",
            mode=mode,
            tasks=[[t, t] for t in range(NUM_TASKS)],
            learner="q_learning",
            learner_params={},
            seed=0,
            num_histories=sum(h.num_histories for h in shards),
            num_transitions=sum(h.num_steps for h in shards),
            episodes_per_history=8,
            keep_every=1,
            num_shards=len(shards),
            shards=records,
            command="test",
            config={},
        ),
    )
    return root


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    first = synthetic_histories(num_histories=7, first_step=0, seed=1)
    second = synthetic_histories(num_histories=5, first_step=first.num_steps, seed=2)
    return write_dataset(tmp_path_factory.mktemp("ad") / "data", [first, second])


@pytest.fixture(scope="module")
def histories(dataset_path: Path) -> Histories:
    return open_dataset(dataset_path).to_histories()


def all_windows(dm: HistoryDataModule, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(history `[W]`, global step numbers `[W, context_len]`) of every window of a split."""
    dm.setup()
    windows = dm.train_windows if split == "train" else dm.val_windows
    history, _, _ = windows.locate(np.arange(len(windows)))
    batch = windows.__getitems__(list(range(len(windows))))
    return history, batch["rewards"].numpy().astype(np.int64)


def test_windows_cross_episodes_never_histories(dataset_path: Path, histories: Histories) -> None:
    dm = HistoryDataModule(path=str(dataset_path), context_len=7, val_fraction=0.0)
    history, steps = all_windows(dm)
    assert len(steps) == np.maximum(np.diff(histories.offsets) - 6, 0).sum()
    np.testing.assert_array_equal(steps, steps[:, :1] + np.arange(7))  # consecutive steps
    start, stop = histories.offsets[history], histories.offsets[history + 1]
    assert np.all((steps >= start[:, None]) & (steps < stop[:, None]))  # inside one history
    episodes = histories.episode[steps]
    assert np.any(episodes[:, 0] != episodes[:, -1])  # windows do span episode boundaries
    batch = dm.train_windows.__getitems__([3, 0])
    np.testing.assert_array_equal(batch["observations"], histories.observations[steps[[3, 0]]])
    np.testing.assert_array_equal(batch["actions"], histories.actions[steps[[3, 0]]])
    assert batch["observations"].dtype == torch.int64 and batch["rewards"].dtype == torch.float32


def test_split_is_by_task(dataset_path: Path, histories: Histories) -> None:
    dm = HistoryDataModule(path=str(dataset_path), context_len=4, val_fraction=0.34, seed=3)
    train, val = dm.split_histories()
    assert len(dm.val_tasks) == 2
    assert sorted([*train, *val]) == list(range(histories.num_histories))
    assert set(histories.task_index[val]) == set(dm.val_tasks)
    assert not set(histories.task_index[train]) & set(dm.val_tasks)
    train_history, _ = all_windows(dm, "train")
    val_history, _ = all_windows(dm, "val")
    assert set(train_history) == set(train) and set(val_history) == set(val)
    again = HistoryDataModule(path=str(dataset_path), context_len=4, val_fraction=0.34, seed=3)
    np.testing.assert_array_equal(again.val_tasks, dm.val_tasks)


def test_ed_mode_takes_only_the_last_episodes(dataset_path: Path, histories: Histories) -> None:
    dm = HistoryDataModule(
        path=str(dataset_path), context_len=3, mode="ed", expert_episodes=2, val_fraction=0.0
    )
    _, steps = all_windows(dm)
    assert len(steps) > 0
    assert np.all(histories.episode[steps] >= 6)  # 8 episodes per history: the last two
    with pytest.raises(ValueError, match="expert_episodes"):
        HistoryDataModule(path=str(dataset_path), context_len=3, mode="ed")


def test_ed_mode_on_an_expert_dataset(tmp_path: Path) -> None:
    path = write_dataset(
        tmp_path / "expert",
        [synthetic_histories(num_histories=6, first_step=0, seed=4)],
        mode="expert",
    )
    dm = HistoryDataModule(path=str(path), context_len=5, mode="ed", val_fraction=0.0)
    _, steps = all_windows(dm)
    assert len(np.unique(steps)) == open_dataset(path).num_steps  # every episode is expert
    with pytest.raises(ValueError, match="mode: ed"):
        HistoryDataModule(path=str(path), context_len=5, mode="ad")


def test_shuffle_changes_order_not_content(dataset_path: Path, histories: Histories) -> None:
    plain = HistoryDataModule(path=str(dataset_path), context_len=1, val_fraction=0.0)
    mixed = HistoryDataModule(
        path=str(dataset_path), context_len=1, shuffle_episodes=True, val_fraction=0.0, seed=5
    )
    plain_history, plain_steps = all_windows(plain)
    mixed_history, mixed_steps = all_windows(mixed)
    # with one-step windows, the window order is the history's step order
    np.testing.assert_array_equal(plain_history, mixed_history)
    assert not np.array_equal(plain_steps, mixed_steps)
    np.testing.assert_array_equal(np.sort(plain_steps, axis=0), np.sort(mixed_steps, axis=0))
    for h in range(histories.num_histories):
        order = mixed_steps[mixed_history == h, 0]
        episodes = histories.episode[order]
        assert sorted(order) == list(range(histories.offsets[h], histories.offsets[h + 1]))
        # episodes are moved whole: each appears as one run, its steps in order
        runs = np.flatnonzero(np.diff(episodes)) + 1
        assert len(runs) == 7
        for piece in np.split(order, runs):
            np.testing.assert_array_equal(piece, piece[0] + np.arange(len(piece)))


def test_context_in_episodes_uses_the_episode_length(dataset_path: Path) -> None:
    dm = HistoryDataModule(path=str(dataset_path), context_episodes=2, val_fraction=0.0)
    assert dm.context_len == 2 * dm.episode_len == 40  # Dark Room episodes are 20 steps
    assert (dm.num_observations, dm.num_actions) == (81, 5)
    assert dm.env["name"] == "darkroom" and dm.env["episode_len"] == 20
    with pytest.raises(ValueError, match="exactly one"):
        HistoryDataModule(path=str(dataset_path), context_len=4, context_episodes=1)


def test_too_long_a_context_is_a_clear_error(dataset_path: Path) -> None:
    dm = HistoryDataModule(path=str(dataset_path), context_len=10_000, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"lower data\.context_len"):
        dm.setup()


def test_sampling_is_seeded_and_worker_safe(dataset_path: Path) -> None:
    def first_batches(seed: int, workers: int) -> list[torch.Tensor]:
        dm = HistoryDataModule(
            path=str(dataset_path), context_len=6, batch_size=4, num_workers=workers, seed=seed
        )
        loader = dm.train_dataloader()
        return [batch["rewards"] for _, batch in zip(range(3), loader, strict=False)]

    reference = first_batches(0, 0)
    assert all(b.shape == (4, 6) for b in reference)
    for same in (first_batches(0, 0), first_batches(0, 1)):
        for a, b in zip(reference, same, strict=True):
            torch.testing.assert_close(a, b)
    assert not torch.equal(torch.cat(reference), torch.cat(first_batches(1, 0)))


def test_window_dataset_pickles_without_the_memory_maps(dataset_path: Path) -> None:
    dm = HistoryDataModule(path=str(dataset_path), context_len=6, val_fraction=0.0)
    dm.setup()
    copy = pickle.loads(pickle.dumps(dm.train_windows))
    assert copy._data is None
    torch.testing.assert_close(copy[5], dm.train_windows[5])


def test_carried_state_windows_walk_whole_histories(
    dataset_path: Path, histories: Histories
) -> None:
    """`data.carry_state`: each batch row walks histories window after window from their first
    step, `first` marking where one starts; ranks share no history and run as many batches."""
    dm = HistoryDataModule(
        path=str(dataset_path), context_len=3, val_fraction=0.0, carry_state=True, batch_size=2
    )
    dm.setup()
    windows = dm.train_windows
    sampler = ConsecutiveSampler(windows, batch_size=2, seed=0)
    lanes = sampler.lane_windows(0)
    assert lanes.shape == (sampler.lane_len, 2) and len(sampler) == lanes.size
    assert list(sampler) == lanes.reshape(-1).tolist()  # batch t = row t: one window per lane
    for lane in lanes.T:
        batch = windows.__getitems__(lane.tolist())
        steps = batch["rewards"].numpy().astype(np.int64)  # each step's global number
        history = np.searchsorted(histories.offsets, steps[:, 0], side="right") - 1
        starts = histories.offsets[history]
        np.testing.assert_array_equal(batch["first"].numpy(), steps[:, 0] == starts)
        assert batch["first"][0]  # a lane starts with a history's first window
        follows = ~batch["first"].numpy()[1:]
        np.testing.assert_array_equal(steps[1:, 0][follows], steps[:-1, -1][follows] + 1)
        np.testing.assert_array_equal(history[1:][follows], history[:-1][follows])
    again = ConsecutiveSampler(windows, batch_size=2, seed=0)
    np.testing.assert_array_equal(again.lane_windows(0), lanes)
    assert not np.array_equal(sampler.lane_windows(1), lanes)  # other lanes every epoch

    ranks = [ConsecutiveSampler(windows, batch_size=2, num_replicas=2, rank=r) for r in (0, 1)]
    walked = [set(windows.locate(np.array(list(s)))[0]) for s in ranks]
    assert not walked[0] & walked[1] and len(ranks[0]) == len(ranks[1])


def test_carried_state_refuses_windows_drawn_with_replacement(dataset_path: Path) -> None:
    with pytest.raises(ValueError, match="train_windows_per_epoch"):
        HistoryDataModule(
            path=str(dataset_path), context_len=3, carry_state=True, train_windows_per_epoch=8
        )
    dm = HistoryDataModule(path=str(dataset_path), context_len=3, carry_state=True, batch_size=64)
    dm.setup()
    with pytest.raises(ValueError, match=r"lower data\.batch_size"):
        ConsecutiveSampler(dm.train_windows, batch_size=64)


def test_a_training_seed_varies_the_carve_and_the_window_order(dataset_path: Path) -> None:
    """What `data.seed` (which a sweep trial sets to its training seed) changes: the validation
    tasks, and the order the training windows come in."""

    def first_batch(dm: HistoryDataModule) -> np.ndarray:
        dm.setup()
        return next(iter(dm.train_dataloader()))["rewards"].numpy()

    kwargs = {"path": str(dataset_path), "context_len": 4, "val_fraction": 0.34, "batch_size": 4}
    carves = {tuple(HistoryDataModule(**kwargs, seed=s).val_tasks) for s in range(6)}
    assert len(carves) > 1  # another seed, another validation carve
    a, b = (HistoryDataModule(**kwargs, seed=s) for s in (0, 1))
    zero = HistoryDataModule(**kwargs, seed=0)
    np.testing.assert_array_equal(first_batch(a), first_batch(zero))  # a seed is reproducible
    assert not np.array_equal(first_batch(a), first_batch(b))


def test_train_tasks_keeps_that_many_training_tasks(
    dataset_path: Path, histories: Histories
) -> None:
    kwargs = {"path": str(dataset_path), "context_len": 4, "val_fraction": 0.34, "seed": 3}
    full = HistoryDataModule(**kwargs)
    some = HistoryDataModule(**kwargs, train_tasks=2)
    train, val = some.split_histories()
    np.testing.assert_array_equal(val, full.split_histories()[1])  # the carve is untouched
    tasks = set(histories.task_index[train])
    assert len(tasks) == 2 and tasks < set(histories.task_index[full.split_histories()[0]])
    assert set(train) == set(np.flatnonzero(np.isin(histories.task_index, list(tasks))))
    with pytest.raises(ValueError, match=r"data\.train_tasks is 9, but .* has 4 training tasks"):
        HistoryDataModule(**kwargs, train_tasks=9).split_histories()
