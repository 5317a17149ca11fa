"""Prepared data: the encoded log, its split and item titles, with a fingerprint.

The fingerprint identifies the data a model was trained on: a run directory stores it, and
re-evaluating the run refuses data that no longer match it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from towerkit.data.encoding import EncodedInteractions
from towerkit.data.sequences import item_counts
from towerkit.data.split import Split
from towerkit.data.vocab import Vocab
from towerkit.types import FeatureTable


@dataclass(frozen=True)
class Prepared:
    """Encoded data and its split.

    Attributes:
        encoded: the time-ordered log as integer arrays, with vocabularies and side features.
        split: which part of each user's sequence trains, validates and tests.
        titles: each item's title by item id (index 0 is padding), where the data set has
            titles.
        labels: ``(name, values)``: one categorical side attribute of each item by item id
            (e.g. ML-1M's genre), which reports colour items by; None where the item table
            has none. Training does not read it (it is not in the fingerprint).
        objects: the objects read from a bucket (URL, size, ETag), which ``data.json``
            records beside the fingerprint; empty for local files. The fingerprint itself is
            of the bytes' content, which an ETag stands for: a log rewritten with the same rows
            keeps it, one object changed changes it.
    """

    encoded: EncodedInteractions
    split: Split
    titles: np.ndarray | None = None
    labels: tuple[str, np.ndarray] | None = None
    objects: tuple[dict, ...] = ()

    @property
    def train_counts(self) -> np.ndarray:
        """Training occurrences per item id (no validation or test interaction counted)."""
        return item_counts(self.split.train().items, self.encoded.n_items)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of everything training reads: ids, sequences, timestamps, the split and the
        side features (titles and ratings, which training does not read, are left out)."""
        digest = hashlib.sha256()

        def add(label: str, data: bytes | np.ndarray) -> None:
            data = memoryview(data).cast("B")  # an array's bytes without copying them
            digest.update(f"{label}:{len(data)}:".encode())
            digest.update(data)

        def add_vocab(label: str, vocab: Vocab) -> None:
            raw = vocab.raw
            add(f"{label}.dtype", raw.dtype.kind.encode())
            add(label, "\x1f".join(map(str, raw.tolist())).encode())

        def add_features(label: str, table: FeatureTable) -> None:
            for name in table.values:
                add(f"{label}.{name}.{table.kinds[name]}",
                    np.ascontiguousarray(table.values[name]))  # fmt: skip
                if name in table.vocabs:
                    add_vocab(f"{label}.{name}.vocab", table.vocabs[name])

        encoded, split = self.encoded, self.split
        add_vocab("user", encoded.user_vocab)
        add_vocab("item", encoded.item_vocab)
        for label, array in (
            ("items", split.sequences.items),
            ("timestamps", split.sequences.timestamps),
            ("offsets", split.sequences.offsets),
            ("train_end", split.train_end),
            ("valid_end", split.valid_end),
        ):
            add(label, np.ascontiguousarray(array, dtype=np.int64))
        if split.held_out is not None:
            add("held_out", np.ascontiguousarray(split.held_out, dtype=np.int64))
        if split.fit_start is not None:
            add("fit_start", np.ascontiguousarray(split.fit_start, dtype=np.int64))
        if split.sequences.weights is not None:
            add("weights", np.ascontiguousarray(split.sequences.weights))
        add_features("user_features", encoded.user_features)
        add_features("item_features", encoded.item_features)
        return digest.hexdigest()

    def summary(self) -> dict[str, object]:
        """Sizes and fingerprint, as a run directory records them (and the objects read from
        a bucket, each with its URL, size and ETag)."""
        counts = self.split.counts()
        return {
            "fingerprint": self.fingerprint,
            "n_users": self.encoded.n_users,
            "n_items": self.encoded.n_items,
            "interactions": len(self.encoded),
            **{f"{part}_interactions": n for part, n in counts.items()},
            **({"objects": list(self.objects)} if self.objects else {}),
        }
