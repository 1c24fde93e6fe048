"""Size presets: `configs/backbone/<name>-<size>.yaml`, LightningCLI-style `class_path` + `init_args`.

Each registered backbone has one preset per size in `SIZES`, at matched parameter counts (within
`MAX_SIZE_SPREAD` of each other per size) so comparisons between backbones are fair. Presets are
loaded through jsonargparse, the parser LightningCLI uses, so a preset that loads here also loads as
`--model.backbone configs/backbone/<name>-<size>.yaml`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jsonargparse import ArgumentParser

from backbones.base import Backbone, count_parameters

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "backbone"
SIZES = ("tiny", "100k", "400k", "1.6m")
"""Size names: `tiny` (a few thousand parameters, for tests), then about 100k, 400k and 1.6M."""
MAX_SIZE_SPREAD = 0.10
"""Largest allowed `max / min - 1` of the parameter counts of one size's presets."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset file, named `<name>-<size>.yaml`."""

    name: str
    size: str
    path: Path


def find_presets(directory: Path = PRESET_DIR) -> list[Preset]:
    """Every `<name>-<size>.yaml` in `directory`, sorted by name then size order."""
    presets = []
    for path in sorted(directory.glob("*.yaml")):
        name, _, size = path.stem.rpartition("-")
        if not name or size not in SIZES:
            raise ValueError(
                f"preset file {path} must be named <backbone>-<size>.yaml with size in {SIZES}"
            )
        presets.append(Preset(name=name, size=size, path=path))
    return sorted(presets, key=lambda p: (p.name, SIZES.index(p.size)))


def preset_path(name: str, size: str, directory: Path = PRESET_DIR) -> Path:
    """The path of one preset; a clear error when it does not exist."""
    path = directory / f"{name}-{size}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no preset {path}: add configs/backbone/{name}-{size}.yaml")
    return path


def load_preset(path: str | Path) -> Backbone:
    """Build the backbone a preset file describes, checked as LightningCLI checks it."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Backbone, "backbone", required=True)
    try:
        config = parser.parse_args(["--backbone", str(path)])
    except Exception as error:  # jsonargparse raises its own ArgumentError subclasses
        raise ValueError(f"invalid backbone preset {path}: {error}") from error
    return parser.instantiate_classes(config).backbone


def parameter_count(path: str | Path) -> int:
    """Trainable parameters of the backbone a preset describes."""
    return count_parameters(load_preset(path))


def size_spread(counts: list[int]) -> float:
    """`max / min - 1` of parameter counts: 0.0 for identical sizes."""
    return max(counts) / min(counts) - 1.0
