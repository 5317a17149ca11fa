"""Recommend from a trained run: raw ids in, the top-K raw item ids (with scores) out.

    >>> retriever = Retriever.from_run("runs/youtube_dnn", index="annoy")
    >>> recs = retriever.recommend([1, 42], k=10)      # known users, seen items excluded
    >>> recs.items[0], recs.scores[0], recs.titles[0]
    >>> retriever.recommend_history([["Toy Story (1995)", "Heat (1995)"]], k=10)  # a new user

A known user's query vector uses their whole history (every interaction in the data, so the
recommendation looks past the test item) and their stored side features; an unseen user is
described by a list of raw item ids, oldest first, and optionally by raw side-feature values.

Everything comes from the run directory alone (:class:`~towerkit.runs.RunDir`): no data set is
fetched or prepared, so a run copied to another machine recommends the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from towerkit.data.batches import gather_history
from towerkit.data.vocab import Vocab
from towerkit.index import Index, make_index
from towerkit.runs import RunDir
from towerkit.similarity import get_similarity
from towerkit.types import Batch, FeatureTable


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
    """A trained run's user tower plus an index over its item vectors.

    Args:
        run: a finished run directory (a path or a :class:`RunDir`).
        index: the index kind (see :mod:`towerkit.index`), ``"exact"`` by default.
        **index_options: that index's options.

    Raises:
        RunDirError: not a run directory, or an unfinished run.
    """

    def __init__(self, run: RunDir | str | Path, index: str = "exact", **index_options: Any):
        self.run = run if isinstance(run, RunDir) else RunDir(run)
        self.model = self.run.load_model()
        config = self.run.config
        self.max_len = config.data.max_len
        self.user_vocab, self.item_vocab = self.run.user_vocab, self.run.item_vocab
        self.user_features: FeatureTable = self.run.user_features
        self.titles = self.run.titles
        self._items, self._offsets = self.run.histories
        self.similarity = get_similarity(
            config.similarity.name, normalize=config.similarity.normalize
        )
        n_items = len(self.item_vocab)
        with torch.no_grad():
            vectors = self.model.encode_items(torch.arange(1, n_items + 1))
        self.index: Index = make_index(index, self.similarity, **index_options)
        self.index.build(vectors, ids=np.arange(1, n_items + 1))

    @classmethod
    def from_run(cls, run_dir: str | Path, index: str = "exact", **index_options: Any) -> Retriever:
        """Load a run directory written by ``towerkit train``."""
        return cls(run_dir, index, **index_options)

    def history_of(self, user_ids: Sequence[Any]) -> list[np.ndarray]:
        """Known users' raw item ids, oldest first."""
        users = self.user_vocab.encode(coerce_raw(self.user_vocab, user_ids))
        return [
            self.item_vocab.decode(self._items[self._offsets[u] : self._offsets[u + 1]])
            for u in users
        ]

    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` items for known users (raw ids); their seen items are excluded.

        Raises:
            KeyError: a user id the model never saw (the message names it).
        """
        users = self.user_vocab.encode(coerce_raw(self.user_vocab, user_ids))
        starts, ends = self._offsets[users], self._offsets[users + 1]
        history = gather_history(self._items, starts, ends, self.max_len)
        exclude = None
        if exclude_seen:
            exclude = [self._items[s:e] for s, e in zip(starts, ends, strict=True)]
        return self._search(users, history, None, exclude, k)

    def recommend_history(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        features: Sequence[Mapping[str, Any] | None] | None = None,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """Top-``k`` items for users the model never saw, each given by raw item ids (oldest
        first); the listed items are excluded.

        Args:
            features: per history, raw user side-feature values (``{"gender": "F", "age":
                25}``); a feature left out, or a row of None, counts as missing.

        Raises:
            KeyError: an item id, a feature name or a categorical feature value the model never
                saw (the message names it).
        """
        vocab, max_len = self.item_vocab, self.max_len
        encoded = [vocab.encode(coerce_raw(vocab, h)) if len(h) else np.zeros(0, np.int64)
                   for h in histories]  # fmt: skip
        history = np.zeros((len(encoded), max_len), dtype=np.int64)
        for row, items in enumerate(encoded):
            recent = items[-max_len:]
            if len(recent):
                history[row, -len(recent) :] = recent
        if features is not None and len(features) != len(encoded):
            raise ValueError(f"{len(features)} feature rows for {len(encoded)} histories")
        values = encode_user_features(self.user_features, features or [None] * len(encoded))
        users = np.zeros(len(encoded), dtype=np.int64)  # the padding user: no stored profile
        return self._search(users, history, values, encoded if exclude_seen else None, k)

    @torch.no_grad()
    def _search(self, users, history, features, exclude, k: int) -> Recommendations:
        users = torch.from_numpy(np.asarray(users, dtype=np.int64))
        history = torch.from_numpy(history)
        queries = []
        for b in range(0, len(users), 1024):
            rows = slice(b, b + 1024)
            part = None if features is None else {n: v[rows] for n, v in features.items()}
            batch = Batch(users[rows], history[rows], torch.zeros_like(users[rows]), part)
            queries.append(self.model.encode_users(batch))  # the tower never reads targets
        ids, scores = self.index.search(torch.cat(queries), k, exclude)
        valid = ids > 0
        raw = np.full(ids.shape, None, dtype=object)
        raw[valid] = self.item_vocab.decode(ids[valid])
        titles = None
        if self.titles is not None:
            titles = np.where(valid, self.titles[np.maximum(ids, 0)], None)
        return Recommendations(items=raw, scores=scores, titles=titles)


def encode_user_features(
    table: FeatureTable, rows: Sequence[Mapping[str, Any] | None]
) -> dict[str, torch.Tensor] | None:
    """Raw side-feature values of new users -> the encoded values a user tower takes.

    Categorical and multi-valued values go through the feature's vocabulary; numbers stay
    numbers. A missing feature is 0 (missing), as for a known user without a side row.

    Raises:
        KeyError: a feature the run does not have, or a value its vocabulary never saw.
    """
    if not table.values:
        given = sorted({name for row in rows if row for name in row})
        if given:
            raise KeyError(f"the model uses no user features; got {', '.join(given)}")
        return None
    unknown = sorted({name for row in rows if row for name in row} - set(table.values))
    if unknown:
        raise KeyError(
            f"unknown user feature(s) {', '.join(unknown)}; the model uses: "
            f"{', '.join(table.values)}"
        )
    out = {}
    for name, kind in table.kinds.items():
        column = [None if row is None else row.get(name) for row in rows]
        if kind == "numeric":
            out[name] = torch.tensor([0.0 if v is None else float(v) for v in column])
            continue
        vocab = table.vocabs[name]
        if kind == "categorical":
            codes = [0 if v is None else _code(vocab, name, v) for v in column]
            out[name] = torch.tensor(codes, dtype=torch.long)
            continue
        lists = [[] if v is None else [_code(vocab, name, x) for x in v] for v in column]
        width = max([table.values[name].shape[1], *map(len, lists)])
        codes = np.zeros((len(lists), width), dtype=np.int64)
        for row, values in enumerate(lists):
            codes[row, : len(values)] = values
        out[name] = torch.from_numpy(codes)
    return out


def _code(vocab: Vocab, name: str, value: Any) -> int:
    raw = coerce_raw(vocab, [value]) if np.issubdtype(vocab.raw.dtype, np.integer) else [value]
    if raw[0] not in vocab:
        shown = ", ".join(map(str, vocab.raw[:10])) + (", ..." if len(vocab) > 10 else "")
        raise KeyError(f"unknown value {value!r} of user feature {name!r}; known: {shown}")
    return int(vocab.encode(raw)[0])


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
