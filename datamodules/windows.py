"""A history's windows: `context_len` consecutive steps of one history, crossing episode boundaries
(that is how the model sees improvement) but never histories, so never tasks.

Episodes in sampling order form a "virtual" sequence per history; a window is a run of virtual
positions, mapped back to stored steps through an episode table (`episode_table`: every episode,
only the expert ones for ED, or a permutation of every history's episodes, the control that
destroys the learning signal). Whole batches are gathered with one vectorised index per shard
straight from the memory maps (`WindowDataset.__getitems__`), so sampling stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.reader import HistoryDataset, history_last_steps, open_dataset


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
