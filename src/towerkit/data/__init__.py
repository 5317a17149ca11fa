"""The data layer: read -> encode -> split -> batches (see DESIGN.md).

The batch module needs torch, which takes seconds to import; it is loaded on first use so that
data commands (``towerkit data ...``) stay fast.
"""

from typing import TYPE_CHECKING, Any

from towerkit.data.encoding import EncodedInteractions, encode, encode_features
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

if TYPE_CHECKING:
    from towerkit.data.batches import (
        Batch,
        SequenceBatch,
        SequenceBatches,
        TrainingBatches,
        gather_history,
    )

_LAZY = {"Batch", "SequenceBatch", "SequenceBatches", "TrainingBatches", "gather_history"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from towerkit.data import batches

        return getattr(batches, name)
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
