"""Nearest-neighbour indexes behind one protocol: exact (torch), Annoy, Faiss, Milvus.

Use :func:`make_index` to build one by name and :func:`load_index` to read a saved one;
:func:`recall_at_k` measures an approximate index against exact search. Annoy, Faiss and Milvus
are optional: their packages are imported only when such an index is built or loaded. Every
back end answers the same filters on item attributes (:mod:`towerkit.index.filters`).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from towerkit.index.annoy_index import AnnoyIndex
from towerkit.index.base import (
    Index,
    IndexArgumentError,
    IndexUnavailable,
    merge_interests,
    read_meta,
)
from towerkit.index.exact import ExactIndex
from towerkit.index.faiss_index import FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex
from towerkit.index.filters import FilterError, ItemFilter, parse_filter
from towerkit.index.milvus_index import MilvusIndex, VectorDatabaseError
from towerkit.similarity import Similarity

INDEXES: dict[str, type[Index]] = {
    cls.kind: cls
    for cls in (
        ExactIndex, AnnoyIndex, FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex, MilvusIndex
    )
}  # fmt: skip
#: the index names a config accepts (``eval.index``), one per back end above.
IndexKind = Literal["exact", "annoy", "faiss-flat", "faiss-hnsw", "faiss-ivf", "milvus"]
if set(get_args(IndexKind)) != set(INDEXES):  # pragma: no cover - a developer's slip
    raise ImportError(f"IndexKind {get_args(IndexKind)} must name every index: {list(INDEXES)}")

__all__ = [
    "INDEXES",
    "AnnoyIndex",
    "ExactIndex",
    "FaissFlatIndex",
    "FaissHNSWIndex",
    "FaissIVFIndex",
    "FilterError",
    "Index",
    "IndexArgumentError",
    "IndexKind",
    "IndexUnavailable",
    "ItemFilter",
    "MilvusIndex",
    "VectorDatabaseError",
    "index_options",
    "load_index",
    "make_index",
    "merge_interests",
    "parse_filter",
    "recall_at_k",
]


def make_index(
    kind: str, similarity: str | Similarity = "cosine", *, normalize: bool = False, **options: Any
) -> Index:
    """An empty index of one kind (``exact``, ``annoy``, ``faiss-flat``, ``faiss-hnsw``,
    ``faiss-ivf``, ``milvus``) with its options; call ``build`` next."""
    if kind not in INDEXES:
        raise IndexArgumentError(f"unknown index {kind!r}; use one of: {', '.join(INDEXES)}")
    allowed = index_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise IndexArgumentError(
            f"unknown option(s) {', '.join(unknown)} for the {kind} index; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    _check_types(kind, options)
    INDEXES[kind].check_ranges(options)
    return INDEXES[kind](similarity, normalize=normalize, **options)


def _check_types(kind: str, options: dict[str, Any]) -> None:
    """Each option's value against its constructor annotation (``-o n_trees=1.5`` and
    ``-o ef_search=abc`` are errors that name the option, not tracebacks)."""
    from pydantic import TypeAdapter, ValidationError

    hints: dict[str, Any] = {}
    for cls in reversed(INDEXES[kind].__mro__):
        init = cls.__dict__.get("__init__")
        if init is not None:
            hints.update(typing.get_type_hints(init))
    for name, value in options.items():
        expected = hints.get(name)
        if expected is None:
            continue
        try:
            TypeAdapter(expected).validate_python(value, strict=True)
        except ValidationError:
            if typing.get_origin(expected) is typing.Literal:
                shown = "one of " + ", ".join(map(repr, typing.get_args(expected)))
            else:
                shown = getattr(expected, "__name__", None) or str(expected)
            raise IndexArgumentError(
                f"the {kind} index option {name}={value!r} must be {shown}"
            ) from None


def index_options(kind: str) -> list[str]:
    """The option names an index kind accepts (beyond similarity and normalize)."""
    names: list[str] = []
    for cls in INDEXES[kind].__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.kind is param.KEYWORD_ONLY and name != "normalize" and name not in names:
                names.append(name)
    return names


def load_index(path: str | Path) -> Index:
    """Read any index written by ``Index.save``."""
    kind = read_meta(Path(path))["kind"]
    if kind not in INDEXES:
        raise IndexArgumentError(f"{path}: unknown index kind {kind!r}")
    return INDEXES[kind].load(path)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int | None = None) -> float:
    """Mean share of each query's exact top-``k`` that the approximate top-``k`` also found.

    Padding ids (-1) never count; a query whose exact list is empty is skipped.
    """
    k = k or exact_ids.shape[1]
    approx, exact = approx_ids[:, :k], exact_ids[:, :k]
    found = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    hits = found.any(1).sum(1)
    sizes = (exact >= 0).sum(1)
    valid = sizes > 0
    return float((hits[valid] / sizes[valid]).mean()) if valid.any() else float("nan")
