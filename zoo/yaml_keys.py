"""YAML with a key given twice is refused, not read as its last value.

PyYAML (and so jsonargparse, LightningCLI and the study configs) takes the last of two equal keys
without a word: `lr: 1e-3` a few lines above `lr: 3e-3` silently trains at 3e-3. `check_unique_keys`
walks a document's node tree and raises `DuplicateKeyError` naming the key and both lines;
`cli` puts it in front of jsonargparse's YAML loader, and `sweeps.study.load_spec` calls it.
"""

from __future__ import annotations

from typing import Any

import yaml

from zoo.errors import UserError


class DuplicateKeyError(UserError, ValueError):
    """A YAML mapping gives one key twice."""


def check_unique_keys(text: str, *, source: str = "YAML") -> None:
    """Raise `DuplicateKeyError` if any mapping of the YAML `text` gives a key twice."""
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return  # not YAML at all: the loader behind says what is wrong
    stack = [node for node in documents if node is not None]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise DuplicateKeyError(
                            f"{source}: key {key.value!r} is given twice (lines {seen[key.value]} "
                            f"and {line}); keep one"
                        )
                    seen[key.value] = line
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def refusing_duplicates(loader: Any) -> Any:
    """`loader` (a jsonargparse loader function) that first refuses duplicate keys."""

    def load(value: str) -> Any:
        if isinstance(value, str):
            check_unique_keys(value)
        return loader(value)

    return load
