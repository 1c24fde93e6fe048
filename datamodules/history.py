"""Windows of consecutive steps of learning histories, the training data of AD and ED.

A window is `context_len` consecutive steps of one history: it crosses episode boundaries (that is
how the model sees improvement) but never crosses histories, so never tasks. The datamodule splits
train / validation by task, can restrict windows to expert episodes (ED), and can permute the
episodes of every history (a control that destroys the learning signal on purpose).

Episodes in sampling order form a "virtual" sequence per history; a window is a run of virtual
positions, mapped back to stored steps through an episode table. Whole batches are gathered with
one vectorised index per shard straight from the memory maps, so sampling stays cheap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.parsing import AttributeDict
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from datamodules.reader import HistoryDataset, check_content, history_last_steps, open_dataset

Mode = Literal["ad", "ed"]
LoaderT = TypeVar("LoaderT", bound=DataLoader)


@dataclasses.dataclass(frozen=True)
class EpisodeTable:
    """The episodes one split samples from, in sampling order, laid end to end per history."""

    shard: np.ndarray  # [M] int64: shard of each episode
    start: np.ndarray  # [M] int64: its first step, index within the shard's arrays
    virtual_start: np.ndarray  # [M] int64: its first position in the split's virtual sequence
    history: np.ndarray  # [H] int64: global index of each history of the split
    history_start: np.ndarray  # [H] int64: virtual position of the history's first step
    history_len: np.ndarray  # [H] int64: steps of the history in the table


def episode_table(
    dataset: HistoryDataset,
    histories: np.ndarray,
    *,
    last_episodes: int | None = None,
    shuffle_episodes: bool = False,
    seed: int = 0,
) -> EpisodeTable:
    """The episodes of `histories` (global indices): all of them, or each history's last
    `last_episodes`; in stored order, or permuted within each history (seeded)."""
    wanted = np.zeros(dataset.num_histories, dtype=bool)
    wanted[histories] = True
    parts = []
    first = 0  # global index of the shard's first history
    for shard_id, shard in enumerate(dataset.shards):
        offsets = np.asarray(shard.offsets)
        # a history's last step ends its last episode
        is_end = np.asarray(shard.done, dtype=bool) | history_last_steps(shard)
        ends = np.flatnonzero(is_end)
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        history = np.searchsorted(offsets, starts, side="right") - 1 + first
        keep = wanted[history]
        lengths = ends + 1 - starts
        parts.append((np.full(keep.sum(), shard_id), starts[keep], lengths[keep], history[keep]))
        first += shard.num_histories
    shard_of, start, length, history = (
        np.concatenate(p).astype(np.int64) for p in zip(*parts, strict=True)
    )

    if last_episodes is not None:
        count = np.bincount(history, minlength=dataset.num_histories)
        first_of = np.concatenate([[0], np.cumsum(count)[:-1]])
        rank_from_end = count[history] - 1 - (np.arange(len(history)) - first_of[history])
        keep = rank_from_end < last_episodes
        shard_of, start, length, history = shard_of[keep], start[keep], length[keep], history[keep]
    if shuffle_episodes:
        order = np.lexsort((np.random.default_rng(seed).random(len(history)), history))
        shard_of, start, length, history = (
            shard_of[order],
            start[order],
            length[order],
            history[order],
        )

    virtual_start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    split_histories, first_episode = np.unique(history, return_index=True)
    history_len = np.bincount(history, weights=length, minlength=dataset.num_histories)
    return EpisodeTable(
        shard=shard_of,
        start=start,
        virtual_start=virtual_start,
        history=split_histories,
        history_start=virtual_start[first_episode],
        history_len=history_len[split_histories].astype(np.int64),
    )


class WindowDataset(Dataset):
    """Every window of `context_len` steps inside one history of an `EpisodeTable`.

    Item `i` is one window; `__getitems__` gathers a whole batch at once (the DataLoader uses it).
    The memory maps are opened lazily in each process, so DataLoader workers are safe.
    """

    def __init__(self, data: HistoryDataset, table: EpisodeTable, *, context_len: int) -> None:
        self.path = str(data.path)
        self.table = table
        self.context_len = context_len
        windows = np.maximum(table.history_len - context_len + 1, 0)
        self._cumulative = np.cumsum(windows)
        self._first = self._cumulative - windows  # index of each history's first window
        self._data: HistoryDataset | None = data

    def __len__(self) -> int:
        return int(self._cumulative[-1]) if len(self._cumulative) else 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    @property
    def data(self) -> HistoryDataset:
        if self._data is None:  # in a DataLoader worker: map the files in this process
            self._data = open_dataset(self.path)
        return self._data

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global history `[B]`, shard `[B]`, step index within the shard `[B, context_len]`)."""
        row, offset = self._history_offsets(indices)
        shards, steps = self._steps(row, offset)
        return self.table.history[row], shards, steps

    def _history_offsets(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of the table `[B]`, steps from its history's start to the window's `[B]`)."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)})")
        row = np.searchsorted(self._cumulative, indices, side="right")
        return row, indices - self._first[row]

    def _steps(self, row: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard `[B]`, step index within the shard `[B, context_len]`) of windows."""
        table = self.table
        positions = (table.history_start[row] + offset)[:, None] + np.arange(self.context_len)
        episode = np.searchsorted(table.virtual_start, positions, side="right") - 1
        steps = table.start[episode] + positions - table.virtual_start[episode]
        return table.shard[episode[:, 0]], steps

    def window_index(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Index of the window that starts `offsets` steps into history `rows` (of the table)."""
        rows, offsets = np.asarray(rows, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
        return self._first[rows] + offsets

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        row, offset = self._history_offsets(np.asarray(indices, dtype=np.int64))
        shards, steps = self._steps(row, offset)
        out: dict[str, np.ndarray] = {
            # the window starts its history: a state carried from the window before is reset
            "first": offset == 0,
            "observations": np.empty(steps.shape, dtype=np.int64),
            "actions": np.empty(steps.shape, dtype=np.int64),
            "rewards": np.empty(steps.shape, dtype=np.float32),
        }
        for shard_id in np.unique(shards):
            rows = shards == shard_id
            arrays = self.data.shards[shard_id]
            for key in ("observations", "actions", "rewards"):
                out[key][rows] = getattr(arrays, key)[steps[rows]]
        return {key: torch.from_numpy(array) for key, array in out.items()}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}


class EpochSampler(DistributedSampler):
    """The training windows of one epoch on this rank, in an order fixed by (seed, epoch) alone.

    torch's `DistributedSampler`: a seeded permutation of every window per epoch (Lightning sets
    the epoch), sharded across ranks so that no two ranks draw the same window (but for the few
    that pad every rank to the same count); or, with
    `num_samples`, that many windows drawn with replacement per epoch. Because the order depends on
    nothing else, a run resumed mid-epoch replays it: `skip` drops the first indices of the next
    epoch iterated (those the interrupted run had already trained on).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.with_replacement = num_samples is not None
        if num_samples is not None:
            self.num_samples = math.ceil(num_samples / num_replicas)
            self.total_size = self.num_samples * num_replicas
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        if self.with_replacement:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            size = len(cast(Sized, self.dataset))  # map-style, as DistributedSampler requires
            drawn = torch.randint(size, (self.total_size,), generator=generator)
            indices = drawn[self.rank : self.total_size : self.num_replicas].tolist()
        else:
            indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ConsecutiveSampler(EpochSampler):
    """Training windows that follow one another, for a model that carries its state from each
    window to the next (`data.carry_state`): batch row `b` is a lane that walks whole histories
    in consecutive windows, `[0, L)`, `[L, 2L)`, ... (a history's last `len % L` steps are not
    trained on), then goes on with another history, whose first window is marked `first` in the
    batch (the model resets that row's state there, so it starts each history as the in-context
    evaluation does: from `init_state`). Which histories fill which lane is a seeded permutation
    per epoch; the histories are dealt to ranks once (by `seed`), so ranks never share one. Every
    rank's lanes are cut to the same length, fixed for the run (so `len` and the resume `skip`
    of `EpochSampler` hold): at most one history's windows shorter than the average lane.
    """

    def __init__(
        self,
        dataset: WindowDataset,
        *,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        self.windows = dataset
        self.lanes = batch_size
        table = dataset.table
        chunks = table.history_len // dataset.context_len  # whole windows from each history's start
        dealt = np.random.default_rng(seed).permutation(len(chunks))
        self.histories = [dealt[r::num_replicas] for r in range(num_replicas)]
        # each history goes to the lane with the fewest windows so far, so no lane is more than
        # one history's windows short of the average
        longest = int(chunks.max(initial=0))
        lengths = [int(chunks[h].sum()) // batch_size - longest for h in self.histories]
        self.lane_len = min(lengths)
        if self.lane_len < 1:
            raise ValueError(
                f"too few whole windows of {dataset.context_len} steps for {batch_size} lanes "
                f"(data.carry_state) on each of {num_replicas} rank(s): lower data.batch_size or "
                "data.context_len"
            )
        self.chunks = chunks
        self.num_samples = self.lane_len * batch_size
        self.total_size = self.num_samples * num_replicas

    def lane_windows(self, epoch: int) -> np.ndarray:
        """`[lane_len, lanes]` window indices of this rank in `epoch`: row `t` is batch `t`."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(self.histories[self.rank])
        filled = np.zeros(self.lanes, dtype=np.int64)
        rows: list[list[int]] = [[] for _ in range(self.lanes)]
        offsets: list[list[int]] = [[] for _ in range(self.lanes)]
        length = self.windows.context_len
        for history in order:
            n = int(self.chunks[history])
            if n == 0:
                continue
            lane = int(np.argmin(filled))
            if filled[lane] >= self.lane_len:
                break  # every lane is full
            rows[lane].extend([int(history)] * n)
            offsets[lane].extend(range(0, n * length, length))
            filled[lane] += n
        index = [
            self.windows.window_index(np.array(r[: self.lane_len]), np.array(o[: self.lane_len]))
            for r, o in zip(rows, offsets, strict=True)
        ]
        return np.stack(index, axis=1)

    def __iter__(self) -> Iterator[int]:
        indices = self.lane_windows(self.epoch).reshape(-1).tolist()
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints and restores on resume
    (Lightning's `state_dict` / `load_state_dict` interface for loaders): the epoch and how many
    batches the model consumed in it, counted by `HistoryDataModule.on_after_batch_transfer`
    (so batches Lightning prefetched but did not train on are not counted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = 0

    def __iter__(self) -> Any:
        sampler = self.sampler
        self.consumed = getattr(sampler, "skip", 0) // self.batch_size if self.batch_size else 0
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, EpochSampler) and self.batch_size:
            self.sampler.set_epoch(state["epoch"])
            self.sampler.skip = state["consumed"] * self.batch_size


def _batch_as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collate function: `WindowDataset.__getitems__` already returns a collated batch."""
    return batch


def split_tasks(task_index: np.ndarray, *, val_fraction: float, seed: int) -> np.ndarray:
    """Validation tasks: a seeded `val_fraction` of the distinct tasks (at least one if > 0)."""
    tasks = np.unique(task_index)
    if val_fraction <= 0:
        return tasks[:0]
    if len(tasks) < 2:
        raise ValueError(
            f"the dataset has {len(tasks)} task(s): a split by task needs at least 2 "
            "(or set data.val_fraction: 0)"
        )
    count = min(max(round(val_fraction * len(tasks)), 1), len(tasks) - 1)
    return np.sort(np.random.default_rng(seed).permutation(tasks)[:count])


class HistoryDataModule(pl.LightningDataModule):
    """Windows of learning histories from a dataset written by `zoo collect`."""

    def __init__(
        self,
        *,
        path: str,
        context_len: int | None = None,
        context_episodes: float | None = None,
        mode: Mode = "ad",
        expert_episodes: int | None = None,
        shuffle_episodes: bool = False,
        val_fraction: float = 0.1,
        train_tasks: int | None = None,
        val_windows: int = 2048,
        train_windows_per_epoch: int | None = None,
        carry_state: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            path: dataset directory (`zoo collect` output).
            context_len: steps per window. Give this or `context_episodes`.
            context_episodes: steps per window as a number of episodes (x the env's episode_len,
                rounded; 0.5 is half an episode).
            mode: `ad`, windows anywhere in the learning histories; `ed`, windows of expert
                episodes only (an expert dataset, or each history's last `expert_episodes`).
            expert_episodes: in `ed` mode on learning histories, how many last episodes of each
                history count as converged.
            shuffle_episodes: permute the episodes within every history (seeded): same steps,
                no order; a control that removes the improvement AD learns from.
            val_fraction: fraction of the tasks whose histories are held out for validation.
            train_tasks: train on the histories of this many of the remaining tasks (a seeded
                choice); None: all of them. The number of training tasks as an ablation axis.
            val_windows: validation windows (a fixed seeded subset of the held-out windows).
            train_windows_per_epoch: windows drawn (with replacement) per epoch; None: every
                training window once, shuffled.
            carry_state: train on consecutive windows (`ConsecutiveSampler`: each batch row
                walks whole histories) with the model's state carried from one window to the
                next and gradients cut between them (truncated backpropagation through time):
                a recurrent or state-space member then learns from states that have seen whole
                histories, as its `stream` evaluation uses them, instead of from a fresh state
                every window. Linked to `model.carry_state`.
            batch_size: windows per batch.
            num_workers: DataLoader worker processes (each opens its own memory maps).
            seed: seed of the task split, the episode permutation and the sampling order.
        """
        super().__init__()
        self.save_hyperparameters()
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("val_windows", val_windows, 1),
            ("num_workers", num_workers, 0),
            ("train_windows_per_epoch", train_windows_per_epoch, 1),
        ):
            if value is not None and value < low:
                raise ValueError(f"data.{name} must be >= {low}, got {value}")
        if carry_state and train_windows_per_epoch is not None:
            raise ValueError(
                "data.carry_state walks every history once per epoch: it does not take "
                "data.train_windows_per_epoch (drop one of them)"
            )
        self.carry_state = bool(carry_state)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if train_tasks is not None and train_tasks < 1:
            raise ValueError(f"data.train_tasks must be >= 1 (or null: all), got {train_tasks}")
        self.path = str(path)
        # checked where it is opened for training: checksums (each file once, then remembered)
        # and values (no NaN, nothing outside the env's spaces), before the first step
        self.dataset = open_dataset(self.path, verify="checksum")
        check_content(self.dataset)
        manifest = self.dataset.manifest
        family = self.dataset.family
        if (context_len is None) == (context_episodes is None):
            raise ValueError("give exactly one of data.context_len and data.context_episodes")
        if context_episodes is not None:
            context_len = round(context_episodes * family.episode_len)
        assert context_len is not None  # given, or just computed from context_episodes
        if context_len < 1:
            raise ValueError(f"data.context_len must be >= 1, got {context_len}")
        if mode not in ("ad", "ed"):
            raise ValueError(f"data.mode must be 'ad' or 'ed', got {mode!r}")
        if mode == "ad" and manifest.mode == "expert":
            raise ValueError(
                f"{self.path} holds expert episodes, not learning histories: use data.mode: ed"
            )
        if mode == "ed" and manifest.mode != "expert" and expert_episodes is None:
            raise ValueError(
                f"{self.path} holds learning histories: data.mode ed needs data.expert_episodes "
                "(how many last episodes of each history count as converged), or an expert dataset"
            )
        if expert_episodes is not None and expert_episodes < 1:
            raise ValueError(f"data.expert_episodes must be >= 1, got {expert_episodes}")
        self.context_len = int(context_len)
        # the resolved length: Lightning refuses hparams that differ from the model's
        self.save_hyperparameters({"context_len": self.context_len})
        self.mode = mode
        self.num_observations = family.num_observations
        self.observation_factors = tuple(family.observation_factors)
        self.num_actions = family.num_actions
        self.episode_len = family.episode_len
        self.env = {
            "name": manifest.env,
            "params": dict(manifest.env_params),
            "episode_len": family.episode_len,
            "dataset": str(Path(self.path).resolve()),
            "fingerprint": manifest.fingerprint,  # what was collected: a resumed run must match
        }
        self.val_tasks = split_tasks(self.dataset.task_index, val_fraction=val_fraction, seed=seed)
        # the validation goals, recorded in the model: in-context model selection plays these
        # training-distribution tasks whose histories training never sees, never the test split
        self.env["val_tasks"] = self.dataset.tasks[self.val_tasks].tolist()
        self.train_windows: WindowDataset | None = None
        self.val_windows: WindowDataset | None = None
        self._train_loader: ResumableLoader | None = None

    @property
    def _hp(self) -> AttributeDict:
        """`hparams` as what `save_hyperparameters` made it (Lightning types it as any mapping)."""
        return cast(AttributeDict, self.hparams)

    def split_histories(self) -> tuple[np.ndarray, np.ndarray]:
        """Global indices of the (train, validation) histories: split by task."""
        is_val = np.isin(self.dataset.task_index, self.val_tasks)
        train = np.flatnonzero(~is_val)
        if self._hp.train_tasks is not None:
            tasks = np.unique(self.dataset.task_index[train])
            if self._hp.train_tasks > len(tasks):
                raise ValueError(
                    f"data.train_tasks is {self._hp.train_tasks}, but {self.path} has "
                    f"{len(tasks)} training tasks after the validation carve: lower it"
                )
            rng = np.random.default_rng([self._hp.seed, 1])  # not the carve's stream
            kept = rng.permutation(tasks)[: self._hp.train_tasks]
            train = train[np.isin(self.dataset.task_index[train], kept)]
        return train, np.flatnonzero(is_val)

    def _windows(self, histories: np.ndarray, split: str) -> WindowDataset:
        hp = self._hp
        table = episode_table(
            self.dataset,
            histories,
            last_episodes=hp.expert_episodes if self.mode == "ed" else None,
            shuffle_episodes=hp.shuffle_episodes,
            seed=hp.seed,
        )
        windows = WindowDataset(self.dataset, table, context_len=self.context_len)
        if len(histories) and len(windows) == 0:
            longest = int(table.history_len.max(initial=0))
            raise ValueError(
                f"no {split} history has {self.context_len} steps to sample a window from "
                f"(the longest usable one has {longest}): lower data.context_len"
            )
        return windows

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return
        train, val = self.split_histories()
        self.train_windows = self._windows(train, "training")
        self.val_windows = self._windows(val, "validation") if len(val) else None

    def _loader(self, dataset: Dataset, sampler: Any, *, cls: type[LoaderT]) -> LoaderT:
        workers = self._hp.num_workers
        return cls(
            dataset,
            batch_size=self._hp.batch_size,
            sampler=sampler,
            collate_fn=_batch_as_is,  # type: ignore[arg-type]  # torch assumes a list of samples; __getitems__ batches
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Every training window once per epoch in a seeded order (or `train_windows_per_epoch`
        drawn with replacement; or, with `carry_state`, consecutive windows per batch row),
        sharded across the ranks of a distributed run."""
        self.setup()
        assert self.train_windows is not None  # made by setup()
        trainer = self.trainer
        ranks = {
            "num_replicas": trainer.world_size if trainer else 1,
            "rank": trainer.global_rank if trainer else 0,
            "seed": self._hp.seed,
        }
        sampler: EpochSampler
        if self.carry_state:
            sampler = ConsecutiveSampler(
                self.train_windows, batch_size=self._hp.batch_size, **ranks
            )
        else:
            sampler = EpochSampler(
                self.train_windows, num_samples=self._hp.train_windows_per_epoch, **ranks
            )
        loader = self._loader(self.train_windows, sampler, cls=ResumableLoader)
        self._train_loader = loader
        return loader

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the training batches the model consumed (the loader's resumable position)."""
        trainer = self.trainer
        if trainer is not None and trainer.training and self._train_loader is not None:
            self._train_loader.consumed += 1
        return batch

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self.val_windows is None:
            return []
        count = min(self._hp.val_windows, len(self.val_windows))
        rng = np.random.default_rng(self._hp.seed)
        chosen = np.sort(rng.choice(len(self.val_windows), size=count, replace=False))
        subset = torch.utils.data.Subset(self.val_windows, chosen.tolist())
        return self._loader(subset, SequentialSampler(subset), cls=DataLoader)
