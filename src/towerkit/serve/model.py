"""What a server serves: an export's retriever, its version and catalogue (loaded by
:mod:`towerkit.serve.loading`), and its answers as JSON-ready items."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from towerkit.retrieval import Recommendations, Retriever

logger = logging.getLogger(__name__)


@dataclass
class Served:
    """One loaded model: everything a request needs, swapped as a whole on reload.

    Attributes:
        retriever: the ONNX tower, vectors, histories and index.
        source: the run or export directory it came from.
        version: the model version (from the export manifest).
        index: the index kind searched.
    """

    retriever: Retriever
    source: str | Path
    version: str
    index: str
    manifest: dict[str, Any]
    _tmp: Path | None = field(default=None, repr=False)
    #: the run's report charts (``report.json`` of the export), None where it has none
    report: dict[str, Any] | None = field(default=None, repr=False)
    #: (seconds per batch, seconds per query) of batches by kind of query ("user": a known
    #: user's or an item's, a search; "history": the tower and a search), measured by the probe
    seconds: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    #: the exported item tower (new items' vectors from their features), or None for an
    #: export without one
    item_tower: Any = field(default=None, repr=False)

    @property
    def max_len(self) -> int:
        """The longest history the user tower reads (longer ones keep their last items)."""
        return self.retriever.max_len

    @property
    def n_items(self) -> int:
        """Items in the catalogue."""
        return len(self.retriever.item_vocab)

    @property
    def max_k(self) -> int:
        """The largest ``k`` a request may ask for."""
        return min(1000, self.n_items)

    @cached_property
    def catalogue(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw ids, lowercase labels) of every item, for autocomplete."""
        raw = self.retriever.item_vocab.raw
        titles = self.retriever.titles
        labels = np.asarray(
            [str(t) if titles is not None and t else str(r) for r, t in
             zip(raw, titles[1:] if titles is not None else raw, strict=True)], dtype=object
        )  # fmt: skip
        return raw, np.char.lower(labels.astype(str))

    def search_items(self, prefix: str, limit: int) -> list[dict[str, Any]]:
        """Catalogue items whose title (or id) contains ``prefix``, case aside: the exact
        matches first, then those starting with it, then the rest (catalogue order within
        each)."""
        raw, labels = self.catalogue
        needle = prefix.strip().lower()
        if not needle:
            return []
        contains = np.flatnonzero(np.char.find(labels, needle) >= 0)
        found = labels[contains]
        rank = np.where(found == needle, 0, np.where(np.char.startswith(found, needle), 1, 2))
        order = contains[np.argsort(rank, kind="stable")][:limit]
        titles = self.retriever.titles
        return [
            {"id": plain(raw[i]), "title": None if titles is None else str(titles[i + 1])}
            for i in order
        ]

    def close(self) -> None:
        """Release the index and any temporary files."""
        self.retriever.index.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON takes (a raw id from a vocabulary)."""
    return value.item() if isinstance(value, np.generic) else value


def answers(recs: Recommendations, ks: list[int]) -> list[list[dict[str, Any]]]:
    """Each row of recommendations as JSON-ready items, its first ``k`` (padding dropped)."""
    ids = recs.items.tolist()
    scores = recs.scores.tolist()
    titles = recs.titles.tolist() if recs.titles is not None else None
    found = (recs.ids > 0).sum(axis=1).tolist()
    out = []
    for row, k in enumerate(ks):
        n = min(k, found[row])
        names = titles[row][:n] if titles is not None else [None] * n
        out.append([
            {"id": i, "title": t if t is None or type(t) is str else str(t), "score": s}
            for i, t, s in zip(ids[row][:n], names, scores[row][:n], strict=True)
        ])  # fmt: skip
    return out
