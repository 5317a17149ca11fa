"""Histories as the towers read them: left-padded windows of a CSR item array (numpy only, so
retrieval and serving use it without the rest of the data layer)."""

from __future__ import annotations

import numpy as np


def gather_history(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """Left-padded windows ``items[max(start, end - max_len):end]`` for many rows at once.

    Args:
        items: the flat CSR item array.
        starts, ends: int64 ``[B]`` absolute bounds of each row's history.

    Returns:
        int64 ``[B, max_len]``; the most recent item is in the last column, padding is 0.
    """
    index = ends[:, None] - max_len + np.arange(max_len)  # (B, L) absolute positions
    valid = index >= starts[:, None]
    return np.where(valid, items[np.maximum(index, 0)], 0)
