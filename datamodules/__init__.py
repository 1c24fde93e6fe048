"""Datasets of learning histories: the on-disk format, its reader, and the Lightning DataModule."""

from datamodules.history import EpisodeTable, HistoryDataModule, WindowDataset, episode_table
from datamodules.storage import DatasetError, HistoryDataset, open_dataset

__all__ = [
    "DatasetError",
    "EpisodeTable",
    "HistoryDataModule",
    "HistoryDataset",
    "WindowDataset",
    "episode_table",
    "open_dataset",
]
