"""Loading a model to serve: a run directory (exported to a temporary directory first, so the
user tower always runs in onnxruntime) or an export directory, checked by :func:`probe` before
it answers anyone."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from towerkit import storage
from towerkit.errors import TowerkitError
from towerkit.retrieval.export import (
    MANIFEST_FILE,
    PARITY_TOLERANCE,
    ExportDir,
    ExportError,
    export_run,
)
from towerkit.runs import RUN_FILE, RunDir
from towerkit.serve.jobs import Job, run_jobs
from towerkit.serve.model import Served, plain
from towerkit.storage import is_url

logger = logging.getLogger(__name__)


def is_run(path: Path) -> bool:
    """A run directory (served through an export made first), not an export."""
    return (path / RUN_FILE).exists() and not (path / MANIFEST_FILE).exists()


def load_served(
    path: str | Path, index: str | None = None, threads: int = 1, **options: Any
) -> Served:
    """A run directory (exported to a temporary directory first, in this process) or an export
    directory, probed (:func:`probe`); a URL is read from a local snapshot of what is published
    there (:func:`towerkit.storage.pull`).

    Args:
        threads: onnxruntime's threads for the user tower.

    Raises:
        ExportError, RunDirError: not a usable directory (unfinished, broken, changed, or an
            export whose tower does not answer as its manifest says).
    """
    source: str | Path = str(path) if is_url(path) else Path(path)
    if is_url(path):  # a local snapshot, checked against the manifest (the URL is served)
        path = storage.pull(str(path), what="run or export")
    path = Path(path)
    if not is_run(path):
        return load_export(path, source, index, threads, **options)
    run = RunDir(path)
    run.require_finished()
    tmp = Path(tempfile.mkdtemp(prefix="towerkit-serve-"))
    try:
        export_run(run, tmp / "export", index=index, index_options=options)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_export(tmp / "export", source, index, threads, tmp=tmp, **options)


def load_export(
    directory: Path,
    source: str | Path,
    index: str | None = None,
    threads: int = 1,
    *,
    tmp: Path | None = None,
    **options: Any,
) -> Served:
    """The export in ``directory`` (served as ``source``: the directory asked for, a run where
    ``directory`` is its export), loaded and probed; ``tmp`` is removed with it (and at once
    if it is refused)."""
    try:
        export = ExportDir(directory)
        retriever = export.retriever(index, threads=threads, spin=False, **options)
        kind = index or export.manifest["index"]["kind"]
        served = Served(retriever, source, export.version, kind, export.manifest, tmp,
                        export.report(), item_tower=export.item_tower())  # fmt: skip
        probe(served)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, TowerkitError | OSError):
            # onnxruntime's, faiss's, numpy's own: what they say, as the export's fault
            raise ExportError(f"{directory}: cannot be served ({err})") from err
        raise
    logger.info("serving %s (model %s, index %s)", source, export.version, kind)
    return served


#: how far the tower's query vectors of known users may lie from the vectors the export stored
#: for them (PyTorch's, within PARITY_TOLERANCE of ONNX when exported), before it is refused;
#: onnxruntime's threads sum in another order than the export's check did
PROBE_TOLERANCE = 10 * PARITY_TOLERANCE


def probe_tolerance(manifest: dict) -> float:
    """How far the probe lets the tower's vectors lie from the stored ones: a quantized tower
    (``towerkit export --quantize``) differs from fp32 by what its export measured, so four
    times that; any other ``PROBE_TOLERANCE``. Never more than 0.25, where another model's
    tower would pass (normalised vectors of two models differ by about 1)."""
    quantized = manifest.get("onnx", {}).get("quantized")
    if not quantized:
        return PROBE_TOLERANCE
    return min(0.25, max(PROBE_TOLERANCE, 4 * float(quantized["parity"])))


def probe(served: Served) -> None:
    """Check a loaded model before it answers anyone, and build what its first requests would
    otherwise build on the event loop (the id lookups, the catalogue of ``/items``).

    The manifest describes the export: its sizes must be the loaded arrays', and the user
    tower, run on a few known users' histories, must give the query vectors stored for them at
    export (PyTorch's). Then one query of each kind a request can make (a known user, a
    history through the tower, an item's neighbours) must come back whole.

    Raises:
        ExportError: naming what does not match, or the query that failed.
    """
    retriever, manifest = served.retriever, served.manifest
    where = served.source
    n_users, n_items, dim = manifest["n_users"], manifest["n_items"], manifest["dim"]
    sizes = {"item vectors": (retriever.item_vectors.shape, (n_items, dim)),
             "items": ((len(retriever.item_vocab),), (n_items,)),
             "users": ((len(retriever.user_vocab),), (n_users,))}  # fmt: skip
    for what, (got, expected) in sizes.items():
        if tuple(got) != expected:
            raise ExportError(f"{where}: {what} of shape {got}, the manifest says {expected}")
    users = np.unique(np.linspace(1, n_users, min(8, n_users)).astype(np.int64))
    stored = retriever.user_vectors[users]  # (B, D) or (B, K, D)
    try:
        got = np.asarray(retriever.tower_queries(users), dtype=np.float32)
    except Exception as err:
        raise ExportError(f"{where}: the user tower cannot answer a history ({err})") from None
    if got.shape != stored.shape:
        raise ExportError(f"{where}: the user tower gives query vectors of shape "
                          f"{got.shape[1:]}, the export's users {stored.shape[1:]}")  # fmt: skip
    similarity = retriever.similarity
    expected = similarity.prepare(torch.from_numpy(stored))
    difference = float((similarity.prepare(torch.from_numpy(got)) - expected).abs().max())
    difference /= max(1.0, float(expected.abs().max()))
    if not difference <= probe_tolerance(manifest):  # NaN too
        onnx = manifest["onnx"]
        said = onnx.get("quantized", onnx)["parity"]
        raise ExportError(
            f"{where}: the user tower does not match the export's user vectors (they differ by "
            f"{difference:.2e}; the manifest says {said:.1e}): not the tower of this model"
        )
    # One query of each kind, by raw ids as a request gives them (building the id lookups).
    user = int(users[0])
    raw_user = plain(retriever.user_vocab.raw[user - 1])
    (code,) = retriever.encode_users([raw_user])
    seen = retriever.seen(np.asarray([code]))[0]
    raw_items = retriever.item_vocab.decode(seen if len(seen) else [1]).tolist()
    items = retriever.encode_histories([raw_items])[0]
    k = min(10, n_items)
    jobs = {"a known user's": Job(served, k, seen, user=int(code)),
            "a history's": Job(served, k, items, history=items,
                                times=retriever.times_of(int(code)).tolist() if seen.size else [0]),
            "an item's neighbours'": Job(served, k, items[:1], item=int(items[0]))}  # fmt: skip
    for what, answer in zip(jobs, run_jobs(list(jobs.values())), strict=True):
        if isinstance(answer, BaseException):
            raise ExportError(f"{where}: {what} query failed: {answer}")
    served.catalogue  # noqa: B018  (built now, not by the first /items request)
    user, history = jobs["a known user's"], jobs["a history's"]
    served.seconds = {"user": _seconds(user), "history": _seconds(history)}


def _seconds(job: Job, repeats: int = 3) -> tuple[float, float]:
    """``(seconds per batch, seconds per query)`` of batches of copies of ``job``: a line
    through the fastest of a few batches of 1 and of 8."""
    best = {}
    for size in (1, 8):
        best[size] = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run_jobs([job] * size)
            best[size] = min(best[size], time.perf_counter() - start)
    per_query = max(0.0, (best[8] - best[1]) / 7)
    return max(0.0, best[1] - per_query), per_query


__all__ = ["PROBE_TOLERANCE", "is_run", "load_export", "load_served", "probe", "probe_tolerance"]
