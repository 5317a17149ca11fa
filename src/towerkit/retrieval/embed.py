"""Vectors for items a run never saw, from their side features: ``towerkit embed RUN --items
NEW.parquet --out vectors.parquet`` (``item``, ``vector``).

A model whose item tower reads item features (DSSM; SASRec and GRU4Rec trained with
``data.item_features``) gives a new item the vector of its unknown-id row and its features, so
it can be searched before the next training. Each feature the run was trained with must be a
column of the items file, spelled as in the training side table: a category, a number, or for a
multi-valued feature a list (Parquet) or text joined by ``|``. A category value training never
saw counts as missing (as it would have in training), and the log says how many there were. A
model whose item tower reads ids only says it cannot, and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from towerkit.data.readers import check_file, read_table
from towerkit.data.vocab import Vocab
from towerkit.errors import DataError
from towerkit.files import atomic_write, check_writable
from towerkit.retrieval.retriever import coerce_raw
from towerkit.runs import RunDir
from towerkit.types import FeatureTable

logger = logging.getLogger(__name__)

__all__ = ["embed_items", "read_items"]

#: how a multi-valued feature's values are joined in a text cell
LIST_SEP = "|"


def read_items(path: str | Path) -> pd.DataFrame:
    """The new items' table, in any format the log readers read (Parquet, CSV, TSV, JSON
    lines; by its suffix), with an ``item`` column.

    Raises:
        DataError: a missing, empty or unreadable file, or no ``item`` column.
    """
    path = Path(path)
    check_file(path)
    frame = read_table(path)
    if "item" not in frame.columns:
        raise DataError(f"{path}: no column 'item' (it has: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise DataError(f"{path}: no items")
    return frame


def embed_items(run: str | Path, items: str | Path | pd.DataFrame, out: str | Path) -> Path:
    """Write the vectors of new items (not in the run's vocabulary) to ``out``: ``item`` (raw
    ids, typed as the run's) and ``vector``, computed from their side features (see the module
    docstring). Returns ``out``.

    Raises:
        UnseenItemError: a model whose item tower reads no item features.
        DataError: a missing feature column, an id the run knows already (also spelled as
            another type: ``"12"`` for the item 12), a repeated id, an id of another type than
            the run's.
    """
    run_dir = RunDir(run)
    out = Path(out)
    check_writable(out)
    frame = read_items(items) if not isinstance(items, pd.DataFrame) else items
    where = str(items) if not isinstance(items, pd.DataFrame) else "the items given"
    model = run_dir.load_model()
    table = run_dir.item_features
    missing = [name for name in table.values if name not in frame.columns]
    if table.values and missing:
        raise DataError(
            f"{where}: no column for the item feature(s) {', '.join(missing)} the model reads "
            f"(it reads: {', '.join(table.values)})"
        )
    ids = _new_ids(run_dir.item_vocab, frame["item"].tolist(), where)
    values, unseen = encode_item_features(table, frame)
    if unseen:
        shown = ", ".join(f"{name} {n:,}" for name, n in unseen.items())
        logger.warning("%s: values training never saw count as missing (%s)", where, shown)
    with torch.no_grad():
        tensors = {name: torch.from_numpy(array) for name, array in values.items()}
        vectors = model.eval().encode_unseen_items(tensors).numpy().astype(np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    result = pa.table({"item": pa.array(ids), "vector": column})
    atomic_write(out, lambda tmp: pq.write_table(result, tmp))
    logger.info("vectors of %d new item(s) written to %s", len(ids), out)
    return out


def _new_ids(vocab: Vocab, raw: list[Any], where: str) -> np.ndarray:
    """The new items' ids, typed as the run's; known, repeated or mistyped ids refused."""
    integers = np.issubdtype(vocab.raw.dtype, np.integer)
    if integers:
        try:
            ids = coerce_raw(vocab, raw)
        except KeyError as err:
            raise DataError(f"{where}: {err.args[0]} (this run's item ids are integers)") from None
    else:
        ids = np.asarray([str(value) for value in raw], dtype=object)
    known = [value for value in ids.tolist() if value in vocab]
    if known:
        spelled = [r for r, i in zip(raw, ids.tolist(), strict=True) if i in vocab]
        typed = (int, np.integer) if integers else (str,)
        other = [r for r in spelled if not isinstance(r, typed)]
        how = f" (spelled {other[0]!r}, the same id as the known {known[0]!r})" if other else ""
        raise DataError(
            f"{where}: {len(known):,} item(s) the run knows already, such as {known[0]!r}{how}: "
            "their trained vectors are in the run's items.parquet; list new items only"
        )
    counts = Counter(ids.tolist())
    repeated = [value for value, n in counts.items() if n > 1]
    if repeated:
        raise DataError(f"{where}: item {repeated[0]!r} is listed more than once")
    return ids


def encode_item_features(
    table: FeatureTable, frame: pd.DataFrame
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The items' raw feature values encoded as the model reads them, and per feature the
    number of category values its vocabulary does not hold (encoded as missing)."""
    values: dict[str, np.ndarray] = {}
    unseen: dict[str, int] = {}
    for name, kind in table.kinds.items():
        column = frame[name].tolist()
        if kind == "numeric":
            numbers = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(np.float64)
            if np.isinf(numbers).any():
                raise DataError(f"item feature {name!r}: a value that is not a finite number")
            values[name] = np.nan_to_num(numbers, nan=0.0).astype(np.float32)
            continue
        vocab = table.vocabs[name]
        lists = [_cells(value, kind) for value in column]
        flat = [x for cell in lists for x in cell]
        codes = _codes(vocab, flat)
        unseen[name] = int((codes == 0).sum())
        if kind == "categorical":
            values[name] = _scatter_single(lists, codes)
            continue
        width = max([table.values[name].shape[1], *map(len, lists)])
        matrix = np.zeros((len(lists), width), dtype=np.int64)
        start = 0
        for row, cell in enumerate(lists):
            matrix[row, : len(cell)] = codes[start : start + len(cell)]
            start += len(cell)
        values[name] = matrix
    return values, {name: n for name, n in unseen.items() if n}


def _cells(value: Any, kind: str) -> list[str]:
    """A cell as its list of values (empty when missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if kind == "multi":
        if isinstance(value, list | tuple | np.ndarray):
            return [str(x) for x in value]
        return [x for x in str(value).split(LIST_SEP) if x]
    return [str(value)]


def _codes(vocab: Any, raw: list[str]) -> np.ndarray:
    """Codes of raw values (0 for a value the vocabulary does not hold)."""
    if not raw:
        return np.zeros(0, dtype=np.int64)
    typed = raw
    if np.issubdtype(vocab.raw.dtype, np.integer):
        typed = [int(x) if x.lstrip("-").isdigit() else None for x in raw]
    elif np.issubdtype(vocab.raw.dtype, np.floating):
        typed = [float(x) for x in raw]
    return np.asarray([int(vocab.encode([x])[0]) if x in vocab else 0 for x in typed])


def _scatter_single(lists: list[list[str]], codes: np.ndarray) -> np.ndarray:
    """One code per item for a categorical feature (0 where the cell is empty)."""
    out = np.zeros(len(lists), dtype=np.int64)
    start = 0
    for row, cell in enumerate(lists):
        if cell:
            out[row] = codes[start]
            start += 1
    return out
