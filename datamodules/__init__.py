"""Datasets of learning histories: the on-disk format, its reader, and the Lightning DataModule.

Names are imported on first use (PEP 562), so the format and its reader (`zoo collect`,
`zoo data info`) do not pay for importing torch and Lightning, which only the DataModule needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DatasetError": "datamodules.storage",
    "HistoryDataset": "datamodules.reader",
    "open_dataset": "datamodules.reader",
    "EpisodeTable": "datamodules.history",
    "HistoryDataModule": "datamodules.history",
    "WindowDataset": "datamodules.history",
    "episode_table": "datamodules.history",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
