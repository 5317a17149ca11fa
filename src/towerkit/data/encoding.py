"""Encoding: raw ids and side features become contiguous integer arrays.

Ids are assigned in order of first appearance in the *time-ordered* log (a stable sort by
timestamp, ties kept in file order), so two sources of the same data set, with the same rows in
the same order, give identical encoded data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from towerkit.data.interactions import Interactions
from towerkit.data.vocab import BaseVocabs, Vocab
from towerkit.errors import DataError
from towerkit.types import FeatureKind, FeatureTable, Ties


@dataclass(frozen=True)
class EncodedInteractions:
    """The interaction log as integer arrays, sorted by time (stable).

    Attributes:
        users, items: int64 ``[n]`` encoded ids in ``1..n_users`` / ``1..n_items``.
        timestamps: int64 ``[n]`` epoch seconds, non-decreasing.
        ratings: float32 ``[n]`` or None.
        weights: float32 ``[n]`` positive weights of the interactions (their losses are
            weighted by them), or None.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray | None
    user_vocab: Vocab
    item_vocab: Vocab
    user_features: FeatureTable = field(default_factory=FeatureTable)
    item_features: FeatureTable = field(default_factory=FeatureTable)
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        """Users in the vocabulary (ids ``1..n_users``)."""
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        """Items in the vocabulary (ids ``1..n_items``)."""
        return len(self.item_vocab)

    def save_vocabs(self, directory: str | Path) -> None:
        """Write every vocab (ids and features) as Parquet files under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.user_vocab.save(directory / "user.parquet")
        self.item_vocab.save(directory / "item.parquet")
        for prefix, table in (("user", self.user_features), ("item", self.item_features)):
            for name, vocab in table.vocabs.items():
                vocab.save(directory / f"{prefix}.{name}.parquet")


def onto(codes: np.ndarray, vocab: Vocab, base: Vocab) -> tuple[np.ndarray, Vocab]:
    """Codes ``1..n`` of ``vocab`` renumbered onto ``base`` extended by ``vocab``'s ids
    (``0`` stays padding), and the extended vocab."""
    extended = base.extend(vocab.raw)
    if extended is base and np.array_equal(base.raw[: len(vocab)], vocab.raw):
        return codes, base  # the same numbering (re-preparing a warm-started run's own log)
    mapping = np.concatenate([[0], extended.encode(vocab.raw)])
    return mapping[codes], extended


def _kind_of(column: pd.Series) -> FeatureKind:
    values = column.dropna()
    if len(values) and isinstance(values.iloc[0], list | tuple | np.ndarray):
        return "multi"
    if pd.api.types.is_float_dtype(column.dtype):
        return "numeric"
    return "categorical"


def encode_features(
    table: pd.DataFrame | None,
    key: str,
    vocab: Vocab,
    names: Sequence[str],
    kinds: dict[str, FeatureKind] | None = None,
    base: Mapping[str, Vocab] | None = None,
) -> FeatureTable:
    """Encode side-table columns into arrays indexed by the entity's encoded id.

    Args:
        table: the side table (one row per raw id in column ``key``).
        vocab: the entity vocab; side rows for ids outside it are ignored, ids without a side
            row get 0 (missing) in every feature.
        names: the columns to encode.
        kinds: overrides of the inferred kind (lists -> multi, floats -> numeric, else
            categorical).
        base: feature vocabularies (by name) to extend rather than build anew (a warm start):
            known values keep their codes.
    """
    base = base or {}

    def vocab_of(name: str, values: pd.Series) -> Vocab:
        found = Vocab.from_values(values, name=f"{key}.{name}")
        return base[name].extend(found.raw) if name in base else found

    if not names:
        return FeatureTable()
    if table is None:
        raise DataError(f"{key} features {list(names)} were asked for but there is no {key} table")
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise DataError(
            f"no {key} feature column {missing[0]!r}; the {key} table has: "
            f"{', '.join(str(c) for c in table.columns if c != key)}"
        )
    ids = vocab.encode(table[key], unknown="padding")
    known = ids > 0
    ids = ids[known]
    size = vocab.size
    out = FeatureTable()
    for name in names:
        column = table[name][known].reset_index(drop=True)
        kind = (kinds or {}).get(name) or _kind_of(column)
        out.kinds[name] = kind
        if kind == "numeric":
            values = np.zeros(size, dtype=np.float32)
            numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            values[ids] = np.nan_to_num(numeric, nan=0.0)
        elif kind == "categorical":
            present = column.notna().to_numpy()
            feature_vocab = vocab_of(name, column[present])
            values = np.zeros(size, dtype=np.int64)
            values[ids[present]] = feature_vocab.encode(column[present])
            out.vocabs[name] = feature_vocab
        else:  # multi-valued: explode, encode, scatter into a padded [size, L] matrix
            lists = column.map(lambda v: v if isinstance(v, list | tuple | np.ndarray) else [])
            lengths = lists.map(len).to_numpy()
            flat = lists.explode().dropna()
            feature_vocab = vocab_of(name, flat)
            codes = feature_vocab.encode(flat)
            width = max(int(lengths.max()), 1)
            values = np.zeros((size, width), dtype=np.int64)
            rows = np.repeat(ids, lengths)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            cols = np.arange(len(codes)) - starts
            values[rows, cols] = codes
            out.vocabs[name] = feature_vocab
        out.values[name] = values
    return out


def _codes_in_order(column: pd.Series, order: np.ndarray, name: str) -> tuple[np.ndarray, Vocab]:
    """Ids ``1..n`` numbered by first appearance in ``column[order]``, and their vocab.

    Factorising the raw column (strings are slow to move) and then the small integer codes in
    time order gives the same numbering as factorising the reordered raw values, 5x faster.
    """
    raw_codes, raw_uniques = pd.factorize(column)
    codes, first_seen = pd.factorize(raw_codes[order])
    return codes.astype(np.int64) + 1, Vocab(raw_uniques.take(first_seen), name=name)


def encode(
    interactions: Interactions,
    *,
    user_features: Sequence[str] = (),
    item_features: Sequence[str] = (),
    feature_kinds: dict[str, FeatureKind] | None = None,
    base: BaseVocabs | None = None,
    ties: Ties = "stable",
) -> EncodedInteractions:
    """Sort the log by time (stable, unless ``ties`` says otherwise) and encode ids and the
    named side features.

    Args:
        user_features, item_features: side-table columns to encode (none by default).
        feature_kinds: kind overrides by feature name (e.g. ``{"year": "numeric"}``).
        base: vocabularies to extend (a warm start): known ids keep their integers, new ones
            follow in order of first appearance, and known ids absent from this log keep
            theirs (with no interaction).
        ties: the order of equal times: ``stable`` (the log's) or ``hstu`` (numpy's quicksort
            of the whole log, as HSTU's preprocessing sorts; see
            :meth:`~towerkit.data.Sequences.from_arrays`).

    Example::

        enc = encode(inter, item_features=["genres"])
        enc.items[:3], enc.item_features.values["genres"].shape
    """
    frame = interactions.frame
    order = np.argsort(
        frame["timestamp"].to_numpy(), kind="stable" if ties == "stable" else "quicksort"
    )
    user_codes, user_vocab = _codes_in_order(frame["user"], order, "user")
    item_codes, item_vocab = _codes_in_order(frame["item"], order, "item")
    if base is not None:
        user_codes, user_vocab = onto(user_codes, user_vocab, base.user)
        item_codes, item_vocab = onto(item_codes, item_vocab, base.item)
    ratings = None
    if "rating" in frame.columns:
        ratings = frame["rating"].to_numpy(dtype=np.float32)[order]
    weights = None
    if "weight" in frame.columns:
        weights = frame["weight"].to_numpy(dtype=np.float32)[order]
    return EncodedInteractions(
        users=user_codes,
        items=item_codes,
        timestamps=frame["timestamp"].to_numpy(dtype=np.int64)[order],
        ratings=ratings,
        weights=weights,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        user_features=encode_features(
            interactions.users, "user", user_vocab, user_features, feature_kinds,
            base.user_features if base else None,
        ),
        item_features=encode_features(
            interactions.items, "item", item_vocab, item_features, feature_kinds,
            base.item_features if base else None,
        ),
    )  # fmt: skip
