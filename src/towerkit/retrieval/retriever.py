"""Recommend from a trained run: raw ids in, the top-K raw item ids (with scores) out.

    >>> run = towerkit.train({"train": {"epochs": 1}}, towerkit.example_log(100, 50, 2_000), "run")
    >>> retriever = Retriever.from_run("run", index="annoy")
    >>> recs = retriever.recommend([1, 42], k=10)  # known users, their seen items left out
    >>> recs.items.shape, recs.scores.shape
    ((2, 10), (2, 10))
    >>> retriever.recommend_history([[3, 4, 5]], k=10).items.shape  # a new user's items
    (1, 10)

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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from towerkit.data.history import gather_history
from towerkit.data.vocab import Vocab
from towerkit.errors import UnknownError
from towerkit.index import Index, ItemFilter, make_index
from towerkit.retrieval.towers import QueryTower, TimesNeeded, TorchTower
from towerkit.runs import ITEMS_FILE, RunDir
from towerkit.similarity import Similarity
from towerkit.types import FeatureTable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


@dataclass(frozen=True)
class Recommendations:
    """Top-K lists for a batch of queries, best first.

    Attributes:
        items: ``[B, k]`` raw item ids (object array; ``None`` where fewer than ``k`` items
            remain after exclusions).
        scores: float32 ``[B, k]`` similarity scores (``-inf`` for padding).
        titles: ``[B, k]`` item titles, or None when the data set has none.
        ids: int64 ``[B, k]`` the items' encoded ids (-1 for padding).
    """

    items: np.ndarray
    scores: np.ndarray
    titles: np.ndarray | None
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)


def coerce_raw(vocab: Vocab, values: Sequence[Any]) -> np.ndarray:
    """Raw ids typed like the vocab's: ``"42"`` is ``42`` for integer ids, ``42`` is ``"42"``
    for string ids (ids from a command line or JSON)."""
    raw = vocab.raw
    array = np.asarray(list(values), dtype=object)
    if np.issubdtype(raw.dtype, np.integer):
        bounds = np.iinfo(raw.dtype)
        out = []
        for value in array:
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise UnknownError(
                    f"unknown {vocab.name} id {value!r} (ids are integers)"
                ) from None
            if isinstance(value, float | np.floating) and number != value:
                raise UnknownError(f"unknown {vocab.name} id {value!r} (ids are integers)")
            if not bounds.min <= number <= bounds.max:  # no id of the vocabulary: not one to cast
                raise UnknownError(f"unknown {vocab.name} id {value!r}")
            out.append(number)
        return np.asarray(out, dtype=raw.dtype)
    return np.asarray([v if isinstance(v, str) else str(v) for v in array], dtype=object)


def encode_raw(vocab: Vocab, values: Sequence[Any]) -> np.ndarray:
    """Raw ids from JSON or a command line -> ids (``KeyError`` naming an unknown id). Ids of
    the vocab's own type are looked up as they are, in one call; only a batch with another
    (``"42"`` for integer ids) is coerced value by value first (:func:`coerce_raw`)."""
    if not isinstance(values, np.ndarray) and len(values) <= 1024:
        found = vocab.find(values)  # a request's ids, typed as the vocab's: one dict lookup each
        if found is not None:
            return found
    try:
        return vocab.encode(values)
    except (KeyError, OverflowError, TypeError, ValueError):
        return vocab.encode(coerce_raw(vocab, values))


class Retriever:
    """A user tower plus an index over the item vectors: raw ids in, top-K raw ids out.

    Build one with :meth:`from_run` (the PyTorch model of a run directory) or with
    :meth:`ExportDir.retriever <towerkit.retrieval.export.ExportDir.retriever>` (the ONNX tower and
    vectors of ``towerkit export``).

    Args:
        tower: the user tower (:class:`TorchTower`, or the ONNX one of an export).
        max_len: the history length the tower reads.
        user_vocab, item_vocab: raw id <-> id.
        user_features: the encoded user side features (values, kinds, vocabularies).
        histories: every known user's items, CSR ``(items, offsets)`` over encoded ids.
        item_vectors: ``[n_items, D]`` vectors of items ``1..n_items``.
        similarity: how queries and items are scored.
        titles: titles by item id (index 0 is padding), or None.
        attributes: one row per item ``1..n_items`` (``item``, ``title``, ``count``, ``label``:
            the run's ``items.parquet`` less its vectors), what ``where`` filters read; None
            where there are none.
        user_vectors: ``[n_users + 1, D]`` (``[n_users + 1, K, D]``) query vectors of the
            known users (whole history), when precomputed: ``recommend`` then runs no tower.
        times: int64 epoch seconds aligned with the histories' items, for a tower that reads
            times (HSTU's time bias); a known user's query is then made at :attr:`as_of`, the
            log's last time, unless a call says when.
        interests: what the model declares (:attr:`MatchingModel.n_interests`): None, one
            query vector per user; K, K vectors per user, searched each and merged by best
            score.
        index: an index kind (see :mod:`towerkit.index`), or an index built over
            ``item_vectors`` already.
        **index_options: that index's options.
    """

    def __init__(
        self,
        tower: QueryTower,
        *,
        max_len: int,
        user_vocab: Vocab,
        item_vocab: Vocab,
        user_features: FeatureTable,
        histories: tuple[np.ndarray, np.ndarray],
        item_vectors: np.ndarray,
        similarity: Similarity,
        titles: np.ndarray | None = None,
        user_vectors: np.ndarray | None = None,
        interests: int | None = None,
        index: str | Index = "exact",
        attributes: pd.DataFrame | None = None,
        times: np.ndarray | None = None,
        **index_options: Any,
    ) -> None:
        self.tower, self.max_len, self.interests = tower, max_len, interests
        self.user_vocab, self.item_vocab = user_vocab, item_vocab
        self.user_features = user_features
        self._items, self._offsets = histories
        if self.reads_times and (times is None or len(times) != len(self._items)):
            raise TimesNeeded(
                "this user tower reads the times of a history: give the histories' times"
            )
        self._times = times
        #: when a known user's query is made unless a call says: the log's last time
        self.as_of = int(times.max()) if times is not None and len(times) else 0
        self.item_vectors = np.asarray(item_vectors, dtype=np.float32)
        self.similarity, self.titles, self.user_vectors = similarity, titles, user_vectors
        #: the items the tower knows (ids ``1..model_items``); items added since
        #: (:meth:`with_items`) are searched, but read as unknown in a history
        self.model_items = len(item_vocab)
        ids = np.arange(1, len(item_vocab) + 1)
        if isinstance(index, Index):
            self.index = index
            if index.attributes is None and attributes is not None:
                index.set_attributes(attributes)  # an index saved before it kept them
        else:
            self.index = make_index(index, similarity, **index_options)
            self.index.build(self.item_vectors, ids=ids, attributes=attributes)

    @classmethod
    def from_run(
        cls, run: RunDir | str | Path, index: str = "exact", **index_options: Any
    ) -> Retriever:
        """The model of a finished run directory (``towerkit train``), in PyTorch.

        Raises:
            RunDirError: not a run directory, or an unfinished run.
        """
        run = run if isinstance(run, RunDir) else RunDir(run)
        model = run.load_model()
        config = run.config
        with torch.no_grad():
            items = model.encode_items(torch.arange(1, len(run.item_vocab) + 1)).numpy()
        return cls(
            TorchTower(model),
            max_len=config.data.max_len,
            interests=model.n_interests,
            user_vocab=run.user_vocab,
            item_vocab=run.item_vocab,
            user_features=run.user_features,
            histories=run.histories,
            item_vectors=items,
            similarity=config.similarity.build(),
            titles=run.titles,
            index=index,
            attributes=item_attributes(run.checked(ITEMS_FILE)),
            times=run.history_times if model.reads_times else None,
            **index_options,
        )

    @property
    def reads_times(self) -> bool:
        """Whether the user tower reads the times of a history and when the query is made
        (HSTU's time bias): then a history comes with its times."""
        return bool(getattr(self.tower, "reads_times", False))

    def use_index(self, index: str, **index_options: Any) -> None:
        """Search through a new index of kind ``index`` over the same item vectors and
        attributes (the one before is closed): what a caller does once it has checked its
        ids and filter against the exact one, before writing into a vector database."""
        built = make_index(index, self.similarity, **index_options)
        ids = np.arange(1, len(self.item_vocab) + 1)
        built.build(self.item_vectors, ids=ids, attributes=self.index.attributes)
        self.index.close()
        self.index = built

    def with_items(
        self,
        items: Sequence[Any],
        vectors: np.ndarray,
        attributes: pd.DataFrame | None = None,
        *,
        titles: Sequence[str | None] | None = None,
        rebuild: bool = False,
    ) -> Retriever:
        """A retriever whose catalogue also holds ``items`` (raw ids, typed as the
        catalogue's): new ones take the next ids, known ones get the new vectors (and titles
        and attributes, where given). The index takes them through
        :meth:`~towerkit.index.base.Index.upsert`, or, with ``rebuild`` (an index that cannot
        add, such as Annoy), is built anew over every vector. This retriever is left as it
        was, so the searches that hold it finish on it.

        Args:
            vectors: ``[len(items), D]``.
            attributes: one row per item, in the index's attribute columns.
            titles: one per item (None: keep a known item's, none for a new one).
        """
        import copy

        raw = coerce_raw(self.item_vocab, items)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(raw), self.item_vectors.shape[1]):
            raise ValueError(
                f"{len(raw)} items need vectors of shape ({len(raw)}, "
                f"{self.item_vectors.shape[1]}), got {vectors.shape}"
            )
        vocab = self.item_vocab.extend(raw)
        codes = vocab.encode(raw)
        table = np.zeros((len(vocab), vectors.shape[1]), dtype=np.float32)
        table[: len(self.item_vectors)] = self.item_vectors
        table[codes - 1] = vectors
        new = copy.copy(self)
        new.item_vocab, new.item_vectors = vocab, table
        if self.titles is not None or titles is not None:
            names = np.full(len(vocab) + 1, "", dtype=object)
            if self.titles is not None:
                names[: len(self.titles)] = self.titles
            for code, title in zip(codes, titles or [None] * len(codes), strict=True):
                if title is not None:
                    names[code] = title
            new.titles = names
        rows = None
        if self.index.attributes is not None:
            import pandas as pd

            rows = attributes if attributes is not None else pd.DataFrame(index=range(len(raw)))
            rows = rows.reset_index(drop=True).copy()
            if "item" in self.index.attributes.columns:
                rows["item"] = raw
            if titles is not None and "title" in self.index.attributes.columns:
                rows["title"] = list(titles)
        if rebuild:
            built = make_index(self.index.kind, self.similarity, **self.index.options())
            ids = np.arange(1, len(vocab) + 1)
            whole = self.index.upserted_attributes(codes, rows)
            new.index = built.build(table, ids=ids, attributes=whole)
        else:
            new.index = self.index.upsert(vectors, codes, rows)
        return new

    def history_of(self, user_ids: Sequence[Any]) -> list[np.ndarray]:
        """Known users' raw item ids, oldest first."""
        users = self.encode_users(user_ids)
        return [
            self.item_vocab.decode(self._items[self._offsets[u] : self._offsets[u + 1]])
            for u in users
        ]

    def encode_users(self, user_ids: Sequence[Any]) -> np.ndarray:
        """Raw user ids -> ids (``KeyError`` naming an id the model never saw)."""
        return encode_raw(self.user_vocab, user_ids)

    def user_queries(self, users: np.ndarray, at: int | None = None) -> np.ndarray:
        """``[B, D]`` query vectors of known users (ids), from their whole history (the stored
        ones where there are; a tower that reads times, asked for another time than
        :attr:`as_of`, computes them)."""
        if self.user_vectors is not None and (at is None or not self.reads_times):
            return self.user_vectors[users]
        return self.tower_queries(users, at)

    def tower_queries(self, users: np.ndarray, at: int | np.ndarray | None = None) -> np.ndarray:
        """``[B, D]`` query vectors of known users (ids) as the tower computes them now, from
        their whole history and stored side features; a tower that reads times makes the
        queries at ``at`` (epoch seconds, one or one per user; default :attr:`as_of`)."""
        starts, ends = self._offsets[users], self._offsets[users + 1]
        history = gather_history(self._items, starts, ends, self.max_len)
        times = None
        if self.reads_times:
            times = np.empty((len(users), self.max_len + 1), dtype=np.int64)
            times[:, :-1] = gather_history(self._times, starts, ends, self.max_len)
            times[:, -1] = self.as_of if at is None else at
        return self._encode(users, history, None, times)

    def times_of(self, user: int) -> np.ndarray:
        """A known user's (id) history times, aligned with :meth:`seen`'s items; zeros where
        the retriever keeps no times (its tower reads none)."""
        begin, end = self._offsets[user], self._offsets[user + 1]
        if self._times is None:
            return np.zeros(end - begin, dtype=np.int64)
        return self._times[begin:end]

    def seen(self, users: np.ndarray) -> list[np.ndarray]:
        """Each known user's item ids (what ``filter_seen`` leaves out)."""
        return [self._items[self._offsets[u] : self._offsets[u + 1]] for u in users]

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        filter_seen: bool = True,
        where: str | ItemFilter | None = None,
        at: int | None = None,
    ) -> Recommendations:
        """Top-``k`` items for known users (raw ids); their seen items are excluded, and only
        the items the filter ``where`` keeps are recommended (``'label == "Comedy"'``). A
        tower that reads times recommends as of ``at`` (epoch seconds; default
        :attr:`as_of`, the log's last time).

        Raises:
            KeyError: a user id the model never saw (the message names it).
            FilterError: a filter that cannot be read, or names an unknown attribute.
        """
        users = self.encode_users(user_ids)
        exclude = self.seen(users) if filter_seen else None
        return self.search(self.user_queries(users, at), k, exclude, where)

    def encode_histories(self, histories: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """Raw item-id histories -> item ids (``KeyError`` naming an unknown item), all looked
        up in one call."""
        flat = [item for h in histories for item in h]
        codes = encode_raw(self.item_vocab, flat) if flat else np.zeros(0, np.int64)
        out, start = [], 0
        for h in histories:
            out.append(codes[start : start + len(h)])
            start += len(h)
        return out

    def history_queries(
        self,
        histories: Sequence[np.ndarray],
        features: Sequence[Mapping[str, Any] | None] | None = None,
        times: Sequence[Sequence[int]] | None = None,
        at: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """``[B, D]`` query vectors of new users: item-id histories (each cut to its last
        ``max_len`` items) and raw side-feature values; for a tower that reads times, each
        history's times (epoch seconds, one per item) and when each query is made (``at``;
        default: at the history's last time)."""
        # Padded to the longest history, not max_len: the towers ignore left padding (tested
        # at export), and a tower call on 20 positions is far cheaper than on 200.
        width = min(self.max_len, max((len(h) for h in histories), default=0)) or 1
        history = np.zeros((len(histories), width), dtype=np.int64)
        for row, items in enumerate(histories):
            recent = items[-self.max_len :]
            if len(recent):
                history[row, width - len(recent) :] = recent
        if features is not None and len(features) != len(histories):
            raise ValueError(f"{len(features)} feature rows for {len(histories)} histories")
        values = encode_user_features(self.user_features, features or [None] * len(histories))
        users = np.zeros(len(histories), dtype=np.int64)  # the padding user: no stored profile
        stamps = self._history_times(histories, width, times, at) if self.reads_times else None
        return self._encode(users, history, values or {}, stamps)

    def _history_times(self, histories, width, times, at) -> np.ndarray:
        """``[B, width + 1]``: each history's times, left-padded with 0, then its query's."""
        if times is None or len(times) != len(histories):
            raise TimesNeeded(
                "this model reads the times of a history (model.time_bias): give one list of "
                "times (epoch seconds) per history"
            )
        out = np.zeros((len(histories), width + 1), dtype=np.int64)
        for row, (items, stamps) in enumerate(zip(histories, times, strict=True)):
            if len(stamps) != len(items):
                raise TimesNeeded(
                    f"history {row}: {len(items)} items but {len(stamps)} times; give one time "
                    "per item"
                )
            recent = np.asarray(stamps, dtype=np.int64)[-self.max_len :]
            if len(recent):
                out[row, width - len(recent) : width] = recent
            last = recent[-1] if len(recent) else 0
            out[row, width] = last if at is None or at[row] is None else at[row]
        return out

    def recommend_history(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        features: Sequence[Mapping[str, Any] | None] | None = None,
        filter_seen: bool = True,
        where: str | ItemFilter | None = None,
        times: Sequence[Sequence[int]] | None = None,
        at: Sequence[int | None] | None = None,
    ) -> Recommendations:
        """Top-``k`` items for users the model never saw, each given by raw item ids (oldest
        first); the listed items are excluded. A model that reads times needs each history's
        ``times`` (see :meth:`history_queries`).

        Args:
            features: per history, raw user side-feature values (``{"gender": "F", "age":
                25}``); a feature left out, or a row of None, counts as missing.

        Raises:
            KeyError: an item id, a feature name or a categorical feature value the model never
                saw (the message names it).
        """
        encoded = self.encode_histories(histories)
        queries = self.history_queries(encoded, features, times, at)
        return self.search(queries, k, encoded if filter_seen else None, where)

    def _encode(self, users, history, features, times=None) -> np.ndarray:
        if len(self.item_vocab) > self.model_items:  # items added since training: unknown
            history = np.where(history > self.model_items, 0, history)
        parts = []
        for b in range(0, max(len(users), 1), 1024):
            rows = slice(b, b + 1024)
            part = None if features is None else {n: v[rows] for n, v in features.items()}
            if times is None:
                parts.append(self.tower(users[rows], history[rows], part))
            else:
                parts.append(self.tower(users[rows], history[rows], part, times[rows]))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def search(
        self, queries: np.ndarray, k: int, exclude=None, where: str | ItemFilter | None = None
    ) -> Recommendations:
        """Top-``k`` raw items of query vectors (``exclude``: item ids per query; ``where``: a
        filter on item attributes); the ``[B, K, D]`` queries of a model of K interests are
        searched per interest and merged by best score."""
        search = self.index.search if self.interests is None else self.index.search_multi
        return self._recommendations(*search(queries, k, exclude, where))

    def similar(
        self, items: np.ndarray, k: int, exclude=None, where: str | ItemFilter | None = None
    ) -> Recommendations:
        """Top-``k`` raw items nearest to items (ids ``[B]``) by their own vectors, the items
        themselves included unless ``exclude`` leaves them out (one vector per item, whatever
        the model's interests)."""
        queries = self.item_vectors[np.asarray(items, dtype=np.int64) - 1]  # (B, D)
        return self._recommendations(*self.index.search(queries, k, exclude, where))

    def _recommendations(self, ids: np.ndarray, scores: np.ndarray) -> Recommendations:
        valid = ids > 0
        raw = np.full(ids.shape, None, dtype=object)
        raw[valid] = self.item_vocab.decode(ids[valid])
        titles = None
        if self.titles is not None:
            titles = np.where(valid, self.titles[np.maximum(ids, 0)], None)
        return Recommendations(items=raw, scores=scores, titles=titles, ids=ids)


def item_attributes(items: Path | pa.Table) -> pd.DataFrame:
    """The item attributes filters read: an ``items.parquet`` (of a run or an export; its path,
    or the table read already) less its vectors, one row per item in id order."""
    import pyarrow.parquet as pq

    if isinstance(items, Path):
        columns = [c for c in pq.read_schema(items).names if c != "vector"]
        return pq.read_table(items, columns=columns).to_pandas()
    return items.drop_columns([c for c in items.column_names if c == "vector"]).to_pandas()


def encode_user_features(
    table: FeatureTable, rows: Sequence[Mapping[str, Any] | None]
) -> dict[str, np.ndarray] | None:
    """Raw side-feature values of new users -> the encoded values a user tower takes.

    Categorical and multi-valued values go through the feature's vocabulary; numbers stay
    numbers. A missing feature is 0 (missing), as for a known user without a side row.

    Raises:
        KeyError: a feature the run does not have, or a value its vocabulary never saw.
    """
    if not table.values:
        given = sorted({name for row in rows if row for name in row})
        if given:
            raise UnknownError(f"the model uses no user features; got {', '.join(given)}")
        return None
    unknown = sorted({name for row in rows if row for name in row} - set(table.values))
    if unknown:
        raise UnknownError(
            f"unknown user feature(s) {', '.join(unknown)}; the model uses: "
            f"{', '.join(table.values)}"
        )
    out = {}
    for name, kind in table.kinds.items():
        column = [None if row is None else row.get(name) for row in rows]
        if kind == "numeric":
            out[name] = np.asarray([_number(name, v) for v in column], dtype=np.float32)
            continue
        vocab = table.vocabs[name]
        if kind == "categorical":
            codes = [0 if v is None else _code(vocab, name, v) for v in column]
            out[name] = np.asarray(codes, dtype=np.int64)
            continue
        lists = [[] if v is None else [_code(vocab, name, x) for x in v] for v in column]
        width = max([table.values[name].shape[1], *map(len, lists)])
        codes = np.zeros((len(lists), width), dtype=np.int64)
        for row, values in enumerate(lists):
            codes[row, : len(values)] = values
        out[name] = codes
    return out


def _number(name: str, value: Any) -> float:
    if value is None:
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UnknownError(f"user feature {name!r} is numeric; got {value!r}") from None
    if not np.isfinite(number):
        raise UnknownError(f"user feature {name!r} must be a finite number; got {value!r}")
    return number


def _code(vocab: Vocab, name: str, value: Any) -> int:
    raw = coerce_raw(vocab, [value]) if np.issubdtype(vocab.raw.dtype, np.integer) else [value]
    if raw[0] not in vocab:
        shown = ", ".join(map(str, vocab.raw[:10])) + (", ..." if len(vocab) > 10 else "")
        raise UnknownError(f"unknown value {value!r} of user feature {name!r}; known: {shown}")
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
            raise UnknownError(f"unknown {vocab.name} id {pieces[i].strip()!r}")
    return out
