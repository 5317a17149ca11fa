"""Recommend from a trained run: raw ids in, the top-K raw item ids (with scores) out.

    >>> retriever = Retriever.from_run("runs/youtube_dnn", index="annoy")
    >>> recs = retriever.recommend([1, 42], k=10)      # known users, seen items excluded
    >>> recs.items[0], recs.scores[0], recs.titles[0]
    >>> retriever.recommend_history([["Toy Story (1995)", "Heat (1995)"]], k=10)  # a new user

A known user's query vector uses their whole history (every interaction in the data, so the
recommendation looks past the test item); an unseen user is described by a list of raw item ids,
oldest first, and gets no profile features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from towerkit.config import Config
from towerkit.data.batches import Batch, gather_history
from towerkit.data.vocab import Vocab
from towerkit.index import Index, make_index
from towerkit.models.base import MatchingModel

if TYPE_CHECKING:
    from towerkit.pipeline import Prepared


@dataclass(frozen=True)
class Recommendations:
    """Top-K lists for a batch of queries, best first.

    Attributes:
        items: ``[B, k]`` raw item ids (object array; ``None`` where fewer than ``k`` items
            remain after exclusions).
        scores: float32 ``[B, k]`` similarity scores (``-inf`` for padding).
        titles: ``[B, k]`` item titles, or None when the data set has none.
    """

    items: np.ndarray
    scores: np.ndarray
    titles: np.ndarray | None

    def __len__(self) -> int:
        return len(self.items)


def coerce_raw(vocab: Vocab, values: Sequence[Any]) -> np.ndarray:
    """Raw ids typed like the vocab's (``"42"`` becomes ``42`` for integer user ids)."""
    raw = vocab.raw
    array = np.asarray(list(values), dtype=object)
    if np.issubdtype(raw.dtype, np.integer):
        out = []
        for value in array:
            try:
                out.append(int(value))
            except (TypeError, ValueError):
                raise KeyError(f"unknown {vocab.name} id {value!r} (ids are integers)") from None
        return np.asarray(out, dtype=raw.dtype)
    return array


class Retriever:
    """A trained model's user tower plus an index over its item vectors.

    Args:
        model: the trained model.
        config: the run's config (similarity, history length).
        prepared: the run's prepared data (vocabularies, histories, titles).
        index: the index kind (see :mod:`towerkit.index`), ``"exact"`` by default.
        **index_options: that index's options.
    """

    def __init__(
        self,
        model: MatchingModel,
        config: Config,
        prepared: Prepared,
        index: str = "exact",
        **index_options: Any,
    ) -> None:
        from towerkit.pipeline import build_similarity

        self.model, self.config, self.prepared = model.eval(), config, prepared
        self.encoded = prepared.encoded
        self.sequences = prepared.split.sequences  # every interaction of every user
        self.similarity = build_similarity(config)
        with torch.no_grad():
            items = model.encode_items(torch.arange(1, self.encoded.n_items + 1))
        self.index: Index = make_index(index, self.similarity, **index_options)
        self.index.build(items, ids=np.arange(1, self.encoded.n_items + 1))

    @classmethod
    def from_run(cls, run_dir: str | Path, index: str = "exact", **index_options: Any) -> Retriever:
        """Load a run directory written by ``towerkit train``."""
        from towerkit.pipeline import load_run

        config, prepared, model = load_run(Path(run_dir))
        return cls(model, config, prepared, index, **index_options)

    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` items for known users (raw ids); their seen items are excluded.

        Raises:
            KeyError: a user id the model never saw (the message names it).
        """
        users = self.encoded.user_vocab.encode(coerce_raw(self.encoded.user_vocab, user_ids))
        starts, ends = self.sequences.offsets[users], self.sequences.offsets[users + 1]
        history = gather_history(self.sequences.items, starts, ends, self.config.data.max_len)
        exclude = None
        if exclude_seen:
            exclude = [self.sequences.items[s:e] for s, e in zip(starts, ends, strict=True)]
        return self._search(users, history, exclude, k)

    def recommend_history(
        self, histories: Sequence[Sequence[Any]], k: int = 10, *, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` items for users the model never saw, each given by raw item ids (oldest
        first); the listed items are excluded.

        Raises:
            KeyError: an item id the model never saw.
        """
        vocab, max_len = self.encoded.item_vocab, self.config.data.max_len
        encoded = [vocab.encode(coerce_raw(vocab, h)) if len(h) else np.zeros(0, np.int64)
                   for h in histories]  # fmt: skip
        history = np.zeros((len(encoded), max_len), dtype=np.int64)
        for row, items in enumerate(encoded):
            recent = items[-max_len:]
            if len(recent):
                history[row, -len(recent) :] = recent
        users = np.zeros(len(encoded), dtype=np.int64)  # padding user: no profile
        return self._search(users, history, encoded if exclude_seen else None, k)

    @torch.no_grad()
    def _search(self, users, history, exclude, k: int) -> Recommendations:
        users = torch.from_numpy(np.asarray(users, dtype=np.int64))
        history = torch.from_numpy(history)
        no_targets = torch.zeros_like(users)  # the user tower never reads targets
        queries = torch.cat([
            self.model.encode_users(Batch(users[b : b + 1024], history[b : b + 1024],
                                          no_targets[b : b + 1024]))
            for b in range(0, len(users), 1024)
        ])  # fmt: skip
        ids, scores = self.index.search(queries, k, exclude)
        valid = ids > 0
        raw = np.full(ids.shape, None, dtype=object)
        raw[valid] = self.encoded.item_vocab.decode(ids[valid])
        titles = None
        if self.prepared.titles is not None:
            titles = np.where(valid, self.prepared.titles[np.maximum(ids, 0)], None)
        return Recommendations(items=raw, scores=scores, titles=titles)


def parse_id_list(vocab: Vocab, text: str) -> list[Any]:
    """Raw ids from a comma-separated list, where ids may themselves contain commas.

    ``"Godfather, The (1972),Heat (1995)"`` gives two ML-1M titles: at each point the longest
    run of comma-joined pieces that is a known id wins.

    Raises:
        KeyError: a piece that starts no known id (the message names it).
    """
    pieces = text.split(",")
    out, i = [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            candidate = ",".join(pieces[i:j]).strip()
            try:
                value = coerce_raw(vocab, [candidate])[0]
            except KeyError:
                continue
            if value in vocab:
                out.append(value)
                i = j
                break
        else:
            raise KeyError(f"unknown {vocab.name} id {pieces[i].strip()!r}")
    return out
