"""What a server serves: an export's retriever, its version and catalogue, loaded from a run or
an export directory (a run is exported to a temporary directory first, so the user tower always
runs in onnxruntime)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from towerkit.export import MANIFEST_FILE, ExportDir, export_run
from towerkit.retrieval import Recommendations, Retriever
from towerkit.runs import RUN_FILE, RunDir

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
    source: Path
    version: str
    index: str
    manifest: dict[str, Any]
    _tmp: Path | None = field(default=None, repr=False)
    #: the run's report charts (``report.json`` of the export), None where it has none
    report: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def max_len(self) -> int:
        return self.retriever.max_len

    @property
    def n_items(self) -> int:
        return len(self.retriever.item_vocab)

    @property
    def max_k(self) -> int:
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
        """Catalogue items whose title (or id) contains ``prefix``; those starting with it
        first."""
        raw, labels = self.catalogue
        needle = prefix.strip().lower()
        if not needle:
            return []
        contains = np.flatnonzero(np.char.find(labels, needle) >= 0)
        starts = np.char.startswith(labels[contains], needle)
        order = contains[np.argsort(~starts, kind="stable")][:limit]
        titles = self.retriever.titles
        return [
            {"id": _plain(raw[i]), "title": None if titles is None else str(titles[i + 1])}
            for i in order
        ]

    def close(self) -> None:
        self.retriever.index.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def load_served(path: str | Path, index: str | None = None, **options: Any) -> Served:
    """A run directory (exported to a temporary directory first) or an export directory.

    Raises:
        ExportError, RunDirError: not a usable directory (unfinished, broken, changed).
    """
    path = Path(path)
    tmp = None
    if (path / RUN_FILE).exists() and not (path / MANIFEST_FILE).exists():
        run = RunDir(path)
        run.require_finished()
        tmp = Path(tempfile.mkdtemp(prefix="towerkit-serve-"))
        try:
            export_dir = export_run(run, tmp / "export", index=index, index_options=options)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        export_dir = path
    try:
        export = ExportDir(export_dir)
        retriever = export.retriever(index, threads=1, **options)
        report = export.report()
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    kind = index or export.manifest["index"]["kind"]
    logger.info("serving %s (model %s, index %s)", path, export.version, kind)
    return Served(retriever, path, export.version, kind, export.manifest, tmp, report)


def to_items(recs: Recommendations, row: int, k: int) -> list[dict[str, Any]]:
    """One row of recommendations as JSON-ready items (padding dropped)."""
    out = []
    for rank in range(min(k, recs.items.shape[1])):
        item = recs.items[row, rank]
        if item is None:
            break
        title = None if recs.titles is None else recs.titles[row, rank]
        out.append(
            {
                "id": _plain(item),
                "title": None if title is None else str(title),
                "score": float(recs.scores[row, rank]),
            }
        )
    return out
