"""The data layer: read -> encode -> split -> batches (see DESIGN.md).

Every name is loaded on first use: ``from towerkit.data.vocab import Vocab`` (what retrieval and
serving need) loads neither pandas nor torch, and data commands (``towerkit data ...``) do not
wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from towerkit import _lazy

if TYPE_CHECKING:
    from towerkit.data.batches import (
        Batch,
        SequenceBatch,
        SequenceBatches,
        TrainingBatches,
    )
    from towerkit.data.cells import parse_timestamps
    from towerkit.data.encoding import EncodedInteractions, encode, encode_features
    from towerkit.data.history import gather_history
    from towerkit.data.interactions import Interactions
    from towerkit.data.prepared import Prepared
    from towerkit.data.readers import (
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

__getattr__, __dir__ = _lazy(
    __name__,
    {
        **dict.fromkeys(
            ["Batch", "SequenceBatch", "SequenceBatches", "TrainingBatches"], "batches"
        ),
        **dict.fromkeys(["EncodedInteractions", "encode", "encode_features"], "encoding"),
        "gather_history": "history",
        "Interactions": "interactions",
        "Prepared": "prepared",
        "parse_timestamps": "cells",
        **dict.fromkeys(["read_delimited", "read_interactions", "read_side_table"], "readers"),
        **dict.fromkeys(["Sequences", "item_counts"], "sequences"),
        **dict.fromkeys(
            ["Split", "Targets", "held_out_users", "last_fraction", "leave_one_out",
             "temporal_split"],
            "split",
        ),
        "Vocab": "vocab",
        "FeatureTable": "towerkit.types",
    },
)  # fmt: skip


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
