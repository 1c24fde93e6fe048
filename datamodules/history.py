"""The datamodule of AD and ED: windows of consecutive steps of learning histories
(`datamodules.windows`), drawn in the order of `datamodules.sampling`.

It splits train / validation by task, can restrict windows to expert episodes (ED), and can
permute the episodes of every history (a control that destroys the learning signal on purpose).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.parsing import AttributeDict
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from datamodules.reader import check_content, open_dataset
from datamodules.sampling import ConsecutiveSampler, EpochSampler, ResumableLoader, _batch_as_is
from datamodules.windows import WindowDataset, episode_table

Mode = Literal["ad", "ed"]
LoaderT = TypeVar("LoaderT", bound=DataLoader)


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
