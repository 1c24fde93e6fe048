"""Interchangeable sequence models behind one contract (`Backbone`), found by name in a registry.

Adding a backbone: one file in this package decorated with `@register_backbone("name")`, one import
line below, one preset per size in `configs/backbone/`.
"""

# Members register themselves on import; one line per file.
from backbones import gated_deltanet as gated_deltanet
from backbones import linear_attention as linear_attention
from backbones import mamba as mamba
from backbones import mamba2 as mamba2
from backbones import mom as mom
from backbones import rnn as rnn
from backbones import rwkv7 as rwkv7
from backbones import transformer as transformer
from backbones.base import (
    BACKBONES,
    Backbone,
    State,
    count_parameters,
    create_backbone,
    register_backbone,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "State",
    "count_parameters",
    "create_backbone",
    "register_backbone",
]
