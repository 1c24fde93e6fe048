"""Interchangeable sequence models behind one contract (`Backbone`), found by name in a registry.

Adding a backbone: one file in this package decorated with `@register_backbone("name")`, one import
line below, one preset per size in `configs/backbone/`.
"""

from backbones.base import (
    BACKBONES,
    Backbone,
    State,
    count_parameters,
    create_backbone,
    register_backbone,
)

# Members register themselves on import; one line per file.

__all__ = [
    "BACKBONES",
    "Backbone",
    "State",
    "count_parameters",
    "create_backbone",
    "register_backbone",
]
