"""The order the windows are drawn in: every window once per epoch, shuffled by a seed that
changes with the epoch and split between ranks (`EpochSampler`), or the windows of every history in
order, one history per batch row (`ConsecutiveSampler`, for a state carried across windows); and a
loader that resumes mid-epoch (`ResumableLoader`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.windows import WindowDataset


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
