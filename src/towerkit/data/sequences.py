"""Per-user sequences in CSR form: one flat item array plus offsets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from towerkit.data.encoding import EncodedInteractions
from towerkit.types import Ties


@dataclass(frozen=True)
class Sequences:
    """Each user's items in time order, stored flat.

    User ``u`` (``1..n_users``; ``0`` is the padding user and always empty) owns
    ``items[offsets[u]:offsets[u + 1]]``, oldest first. Ties in time keep file order.

    Attributes:
        items: int64 ``[nnz]`` encoded item ids.
        timestamps: int64 ``[nnz]`` epoch seconds, aligned with ``items``.
        offsets: int64 ``[n_users + 2]``; ``offsets[0] == offsets[1] == 0``.
        weights: float32 ``[nnz]`` interaction weights aligned with ``items``, or None.
    """

    items: np.ndarray
    timestamps: np.ndarray
    offsets: np.ndarray
    weights: np.ndarray | None = None

    @classmethod
    def from_encoded(cls, encoded: EncodedInteractions) -> Sequences:
        """Group the time-ordered log by user, keeping its order within each user (the order
        of equal times :func:`~towerkit.data.encode` chose)."""
        return cls.from_arrays(
            encoded.users, encoded.items, encoded.timestamps, encoded.n_users, encoded.weights
        )

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        timestamps: np.ndarray,
        n_users: int,
        weights: np.ndarray | None = None,
        *,
        ties: Ties = "stable",
    ) -> Sequences:
        """Build from parallel arrays. Rows are first sorted by time, then grouped by user; both
        sorts are stable, so equal timestamps keep their input order. With ``ties="hstu"`` the
        sort by time is numpy's quicksort over the whole log in input order, as HSTU's
        preprocessing sorts (``DataFrame.sort_values``): equal times end in the order that sort
        leaves them, which depends on numpy's version and the processor (an AVX-512 machine
        sorts with another kernel)."""
        by_time = np.argsort(timestamps, kind="stable" if ties == "stable" else "quicksort")
        by_user = by_time[np.argsort(users[by_time], kind="stable")]
        counts = np.bincount(users, minlength=n_users + 1)
        offsets = np.zeros(n_users + 2, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(
            items=np.ascontiguousarray(items[by_user], dtype=np.int64),
            timestamps=np.ascontiguousarray(timestamps[by_user], dtype=np.int64),
            offsets=offsets,
            weights=None if weights is None else np.ascontiguousarray(weights[by_user]),
        )

    @property
    def n_users(self) -> int:
        """Users with a sequence (ids ``1..n_users``; row 0 is padding)."""
        return len(self.offsets) - 2

    def repeated_rows(self) -> int:
        """Rows that repeat the (user, item, time) of an earlier row: a log loaded twice, or
        an export that wrote each event more than once."""
        if len(self.items) < 2:
            return 0
        users = np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))
        order = np.lexsort((self.items, self.timestamps, users))
        same = (
            (np.diff(users[order]) == 0)
            & (np.diff(self.timestamps[order]) == 0)
            & (np.diff(self.items[order]) == 0)
        )
        return int(same.sum())

    @property
    def lengths(self) -> np.ndarray:
        """int64 ``[n_users + 1]``: sequence length of each user (index 0 is padding)."""
        return np.diff(self.offsets)

    def user_of_position(self) -> np.ndarray:
        """int64 ``[nnz]``: the user owning each flat position."""
        return np.repeat(np.arange(self.n_users + 1, dtype=np.int64), self.lengths)

    def __len__(self) -> int:
        return len(self.items)

    def of(self, user: int) -> np.ndarray:
        """One user's items (for inspection and tests; batch code slices the flat arrays)."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def select(self, start: np.ndarray, end: np.ndarray) -> Sequences:
        """A new CSR holding ``items[start[u]:end[u]]`` for each user (absolute positions)."""
        lengths = np.maximum(end - start, 0).astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Flat gather index: for each kept slot, its absolute position in the old arrays.
        gather = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)
        weights = None if self.weights is None else self.weights[gather]
        return Sequences(self.items[gather], self.timestamps[gather], offsets, weights)


def item_counts(items: np.ndarray, n_items: int) -> np.ndarray:
    """int64 ``[n_items + 1]`` occurrences of each item id in ``items`` (index 0 stays 0)."""
    counts = np.bincount(items, minlength=n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts
