"""The data layer: read -> encode -> split -> batches (see DESIGN.md).

Every name is loaded on first use: ``from towerkit.data.vocab import Vocab`` (what retrieval and
serving need) loads neither pandas nor torch, and data commands (``towerkit data ...``) do not
wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from towerkit.data.batches import (
        Batch,
        SequenceBatch,
        SequenceBatches,
        TrainingBatches,
    )
    from towerkit.data.encoding import EncodedInteractions, encode, encode_features
    from towerkit.data.history import gather_history
    from towerkit.data.interactions import Interactions
    from towerkit.data.prepared import Prepared
    from towerkit.data.readers import (
        parse_timestamps,
        read_delimited,
        read_interactions,
        read_side_table,
    )
    from towerkit.data.sequences import Sequences, item_counts
    from towerkit.data.split import (
        Split,
        Targets,
        held_out_users,
        last_fraction,
        leave_one_out,
        temporal_split,
    )
    from towerkit.data.vocab import Vocab
    from towerkit.types import FeatureTable

_HOMES = {
    "towerkit.data.batches": ("Batch", "SequenceBatch", "SequenceBatches", "TrainingBatches"),
    "towerkit.data.encoding": ("EncodedInteractions", "encode", "encode_features"),
    "towerkit.data.history": ("gather_history",),
    "towerkit.data.interactions": ("Interactions",),
    "towerkit.data.prepared": ("Prepared",),
    "towerkit.data.readers": (
        "parse_timestamps", "read_delimited", "read_interactions", "read_side_table",
    ),
    "towerkit.data.sequences": ("Sequences", "item_counts"),
    "towerkit.data.split": (
        "Split", "Targets", "held_out_users", "last_fraction", "leave_one_out", "temporal_split",
    ),
    "towerkit.data.vocab": ("Vocab",),
    "towerkit.types": ("FeatureTable",),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _HOME_OF:
        return getattr(importlib.import_module(_HOME_OF[name]), name)
    raise AttributeError(f"module 'towerkit.data' has no attribute {name!r}")


__all__ = [
    "Batch",
    "EncodedInteractions",
    "FeatureTable",
    "Interactions",
    "Prepared",
    "SequenceBatch",
    "SequenceBatches",
    "Sequences",
    "Split",
    "Targets",
    "TrainingBatches",
    "Vocab",
    "encode",
    "encode_features",
    "gather_history",
    "held_out_users",
    "item_counts",
    "last_fraction",
    "leave_one_out",
    "parse_timestamps",
    "read_delimited",
    "read_interactions",
    "read_side_table",
    "temporal_split",
]
