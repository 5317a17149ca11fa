"""``towerkit export``: a finished run as files a server loads without PyTorch's model code.

::

    EXPORT/
      manifest.json      model, similarity, dimensions, interests (None, or K vectors per user),
                         inputs, versions, sha256 of every file
      user_tower.onnx    the user tower: (users, history, side features) -> query vectors
                         ([B, D], or [B, K, D] for a multi-interest model); dynamic batch
                         size and history length; a model that reads times (HSTU's time
                         bias) takes them after the history: times [B, L + 1]
      item_tower.onnx    the item tower: (items, item side features) -> item vectors [N, D];
                         id 0 with an item's features is an item the model never saw (models
                         whose item tower reads features: a new item's vector, no PyTorch)
      items.parquet      item, title (when known), vector
      users.parquet      user, history (raw item ids, oldest first), times (a tower that
                         reads them: the history's epoch seconds), vector: the query of the
                         whole history, what serving a known user returns (K * D numbers for
                         K interests)
      vocab/, features/  as in the run directory (raw ids; encoded user side features)
      index/             the configured index over the item vectors (towerkit.index format)
      report.json        what the run learned, as the charts of `towerkit report` (when the
                         run has its per-user outcomes): the served page draws them at /report

The export checks itself: on a sample of known users and of their histories cut short, the ONNX
tower in onnxruntime must give PyTorch's query vectors within ``PARITY_TOLERANCE`` (see
:func:`parity`), and the item tower PyTorch's item vectors, of known items and of the same
items' features on the unknown row (:func:`item_parity`), else nothing is written.
:class:`ExportDir` reads one back, checking every file against its sha256.

``quantize`` (``towerkit export --quantize int8|fp16``) then shrinks the user tower that was
checked, with onnxruntime's tools: ``int8`` quantizes the weights of its matrix products and its
embedding tables to 8 bits (:func:`onnxruntime.quantization.quantize_dynamic`; activations are
quantized per batch at run time), ``fp16`` stores and computes in half precision with float32
inputs and outputs. The manifest records what it changed (``onnx.quantized``): the file's size
before and after, its largest difference from the fp32 tower (as :func:`parity` measures it) and
its agreement: the share of each sampled user's exact top 10 over the catalogue that the
quantized tower's query finds too. The stored vectors (items, known users) stay fp32.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from towerkit import __version__, storage
from towerkit.config import SimilarityConfig
from towerkit.data.history import gather_history
from towerkit.errors import TowerkitError
from towerkit.files import os_reason, sha256_of, staging_dir
from towerkit.index import Index, MilvusIndex, load_index, make_index
from towerkit.models import MODELS, MultiInterestModel
from towerkit.retrieval import Retriever, item_attributes
from towerkit.retrieval.towers import (
    ItemTowerModule,
    OnnxItemTower,
    OnnxTower,
    TorchTower,
    TowerModule,
    stored_features,
)
from towerkit.runs import (
    FEATURES_DIR,
    OUTCOMES_FILE,
    VOCAB_DIR,
    RunDir,
    SavedVocabularies,
    vectors_column,
)
from towerkit.storage import is_url
from towerkit.types import FeatureTable

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
TOWER_FILE = "user_tower.onnx"
ITEM_TOWER_FILE = "item_tower.onnx"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
INDEX_DIR = "index"
OPSET = 17
#: the largest difference allowed between the ONNX and the PyTorch query vectors (see parity)
PARITY_TOLERANCE = 1e-5
#: what ``quantize`` accepts
QUANTIZE = ("int8", "fp16")


class ExportError(TowerkitError, ValueError):
    """An export that cannot be written or read (broken, incomplete, from another version)."""


def _declare_interests(manifest: dict[str, Any], path: Path) -> None:
    """1 -> 2: the manifest declares the model's interests (what the user tower returns per
    user) instead of leaving readers to infer it from the stored vectors' width."""
    model = MODELS.get(manifest.get("model"))
    if model is None:
        raise ExportError(f"{path}: an export of an unknown model {manifest.get('model')!r}")
    width = pq.read_schema(path / USERS_FILE).field("vector").type.list_size
    multi = issubclass(model, MultiInterestModel)
    manifest["interests"] = width // manifest["dim"] if multi else None


#: ``MANIFEST_MIGRATIONS[v](manifest, path)`` turns a manifest of format ``v`` into ``v + 1``
#: in place (in memory); a change of the export layout adds a step here and raises
#: :data:`FORMAT_VERSION`, so exports written before it still load.
MANIFEST_MIGRATIONS: dict[int, Callable[[dict[str, Any], Path], None]] = {1: _declare_interests}


def migrate_manifest(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """``manifest`` brought to :data:`FORMAT_VERSION` through :data:`MANIFEST_MIGRATIONS`.

    Raises:
        ExportError: a format newer than this towerkit's, or one no step leads from.
    """
    version = manifest.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(
            f"{path}: export format {version!r}; this towerkit reads formats up to "
            f"{FORMAT_VERSION} (upgrade towerkit, or export the run again)"
        )
    while version < FORMAT_VERSION:
        if version not in MANIFEST_MIGRATIONS:
            raise ExportError(f"{path}: export format {version} can no longer be read")
        MANIFEST_MIGRATIONS[version](manifest, path)
        version += 1
        manifest["format"] = version
    return manifest


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def export_run(
    run: RunDir | str | Path,
    out: str | Path,
    *,
    index: str | None = None,
    index_options: dict[str, Any] | None = None,
    sample: int = 1000,
    quantize: str | None = None,
) -> Path:
    """Write a finished run as an export directory (see the module docstring).

    Args:
        run: the run directory (or its URL).
        out: the export directory (must not exist, or be empty), or a URL
            (``s3://bucket/exports/a``): the export is written to a local working copy
            (returned), then uploaded with :func:`towerkit.storage.Uploader.publish`, its
            manifest last. An export published there before loses its manifest first: a
            reader sees the old one, none, then the new one.
        index: the index to build and ship (default: the run's ``eval.index``).
        index_options: its options (default: the run's ``eval.index_options`` when the kind is
            the run's).
        sample: known users whose query vectors are compared between ONNX and PyTorch (each
            also with its history cut to half).
        quantize: ``"int8"`` or ``"fp16"``: ship a smaller user tower, measured against the
            fp32 one (see the module docstring).

    Raises:
        ExportError: the ONNX tower differs from PyTorch by more than ``PARITY_TOLERANCE``,
            or ``out`` holds something.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"quantize {quantize!r}: use one of {', '.join(QUANTIZE)}")
    if is_url(out):  # written locally, then published: files first, its manifest last
        url = str(out)
        local = storage.working_copy(url)
        export_run(run, local, index=index, index_options=index_options, sample=sample,
                   quantize=quantize)  # fmt: skip
        uploader = storage.Uploader(url)
        uploader.unpublish()  # an export there before stops being whole now, not midway
        uploader.publish(local, last=[MANIFEST_FILE], what="export")
        return local
    run = run if isinstance(run, RunDir) else RunDir(run)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file, not a directory; pick another --out")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; pick another --out")
    config = run.config
    kind = index or config.eval.index
    if index_options is None:
        index_options = dict(config.eval.index_options) if kind == config.eval.index else {}
    similarity = config.similarity.build()
    make_index(kind, similarity, **index_options)  # bad options fail before any work
    if kind == "milvus" and not index_options.get("uri"):
        raise ExportError(
            "an export's milvus index lives in a database that outlives it: give one "
            "(--to milvus items.db, or -o uri=http://host:19530)"
        )
    run.data  # noqa: B018  (the manifest's; a damaged file is refused before any work)
    model = run.load_model()
    retriever = Retriever.from_run(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out)
    try:
        features = list(run.user_features.values)
        _export_tower(model, run.user_features, config.data.max_len, staging / TOWER_FILE)
        tower = OnnxTower(staging / TOWER_FILE, run.user_features)
        sampled = np.random.default_rng(0).permutation(np.arange(1, len(run.user_vocab) + 1))
        difference = parity(run, retriever.tower, tower, sampled[:sample])
        if difference > PARITY_TOLERANCE:
            raise ExportError(
                f"{run.path}: the ONNX user tower differs from PyTorch by {difference:.2e} "
                f"(allowed {PARITY_TOLERANCE:g}); not exported"
            )
        quantized = None
        if quantize is not None:
            quantized = _quantize(
                staging / TOWER_FILE, tower, quantize, run, retriever, sampled[:sample]
            )
        item_features = run.item_features if model.reads_item_features else FeatureTable()
        _export_item_tower(model, item_features, staging / ITEM_TOWER_FILE)
        items_sample = np.random.default_rng(1).permutation(np.arange(1, len(run.item_vocab) + 1))
        item_difference = item_parity(
            model, OnnxItemTower(staging / ITEM_TOWER_FILE, item_features), items_sample[:sample]
        )
        if item_difference > PARITY_TOLERANCE:
            raise ExportError(
                f"{run.path}: the ONNX item tower differs from PyTorch by {item_difference:.2e} "
                f"(allowed {PARITY_TOLERANCE:g}); not exported"
            )
        shutil.copytree(run.path / VOCAB_DIR, staging / VOCAB_DIR)
        shutil.copytree(run.path / FEATURES_DIR, staging / FEATURES_DIR)
        items = pq.read_table(run.checked(ITEMS_FILE))
        pq.write_table(items, staging / ITEMS_FILE)
        users = np.arange(1, len(run.user_vocab) + 1)
        user_vectors = retriever.user_queries(users)
        kept = ["user", "history"] + (["times"] if retriever.reads_times else [])
        histories = pq.read_table(run.checked(USERS_FILE), columns=kept)
        pq.write_table(
            histories.append_column("vector", vectors_column(user_vectors)),
            staging / USERS_FILE,
        )
        item_vectors = retriever.item_vectors
        built = make_index(kind, similarity, **index_options)
        attributes = item_attributes(items)
        built.build(item_vectors, ids=np.arange(1, len(item_vectors) + 1), attributes=attributes)
        built.save(staging / INDEX_DIR)
        built.close()
        _write_report(run, staging / REPORT_FILE)
        item_tower = {
            "file": ITEM_TOWER_FILE,
            "features": dict(item_features.kinds),
            "parity": item_difference,
        }
        _write_manifest(
            staging, run, kind, built, difference, features, model.n_interests, item_tower,
            quantized,
        )  # fmt: skip
        if out.exists():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    except OSError as err:  # a full disk: nothing of the export is left, in out or beside it
        raise ExportError(f"{out}: cannot write the export ({os_reason(err)})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s to %s (ONNX against PyTorch: %.1e)", run.path, out, difference)
    return out


def publish_items(run: RunDir | str | Path, **index_options: Any) -> Index:
    """A finished run's item vectors and attributes written to a Milvus collection, without an
    export directory (``towerkit export RUN --to milvus URI``): for a server that runs the user
    tower elsewhere. The vectors are the run's own (``items.parquet``), so no model is loaded.

    Args:
        index_options: the milvus index's options (``uri``, ``collection``, ``index_type``, ...).

    Returns:
        the built index (its ``pinned`` collection, under the alias ``collection``); close it.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    run.require_finished()
    built = make_index("milvus", run.config.similarity.build(), **index_options)
    table = pq.read_table(run.checked(ITEMS_FILE))
    vectors = _matrix(table.column("vector"))
    attributes = item_attributes(table)
    return built.build(vectors, ids=np.arange(1, len(vectors) + 1), attributes=attributes)


def _export_tower(model: torch.nn.Module, table: FeatureTable, max_len: int, path: Path) -> None:
    """Trace the user tower to ONNX with the user side features as inputs."""
    features = list(table.values)
    tower = TowerModule(model, features).eval()
    users = torch.tensor([1, 2], dtype=torch.long)
    history = torch.ones(2, max_len, dtype=torch.long)
    values = [torch.from_numpy(v) for v in stored_features(table, users.numpy()).values()]
    axes = {"users": {0: "batch"}, "history": {0: "batch", 1: "length"}, "queries": {0: "batch"}}
    if model.reads_times:  # times [B, L + 1]: the history's, then the query's
        values.insert(0, torch.arange(max_len + 1, dtype=torch.long).expand(2, -1) * 3_600)
        features = ["times", *features]
        axes["times"] = {0: "batch", 1: "length_and_query"}
    for name, value in zip(features, values, strict=True):
        axes[name] = {0: "batch", 1: "width"} if value.dim() == 2 else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on traced shapes
        torch.onnx.export(
            tower,
            (users, history, *values),
            str(path),
            dynamo=False,
            input_names=["users", "history", *features],  # times first, where it reads them
            output_names=["queries"],
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def _export_item_tower(model: torch.nn.Module, table: FeatureTable, path: Path) -> None:
    """Trace the item tower to ONNX with the item side features it reads as inputs."""
    features = list(table.values)
    tower = ItemTowerModule(model, features).eval()
    items = torch.tensor([1, 0], dtype=torch.long)
    values = [torch.from_numpy(v) for v in stored_features(table, items.numpy()).values()]
    axes = {"items": {0: "batch"}, "vectors": {0: "batch"}}
    for name, value in zip(features, values, strict=True):
        axes[name] = {0: "batch", 1: "width"} if value.dim() == 2 else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (items, *values),
            str(path),
            dynamo=False,
            input_names=["items", *features],
            output_names=["vectors"],
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def item_parity(model: Any, tower: OnnxItemTower, items: np.ndarray) -> float:
    """The largest difference between the ONNX and the PyTorch item vectors, relative to their
    scale: of known ``items`` (their stored features), and of the same items' features on the
    unknown row (id 0: an item the model never saw, where the model reads features)."""
    with torch.no_grad():
        expected = model.encode_items(torch.from_numpy(items)).numpy()
    got = tower(items)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    worst = float(np.abs(got - expected).max(initial=0.0)) / scale
    if model.reads_item_features:
        values = stored_features(tower.item_features, items)
        with torch.no_grad():
            tensors = {name: torch.from_numpy(v) for name, v in values.items()}
            expected = model.encode_unseen_items(tensors).numpy()
        got = tower(np.zeros_like(items), values)
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        worst = max(worst, float(np.abs(got - expected).max(initial=0.0)) / scale)
    return worst


def parity(run: RunDir, reference: TorchTower, tower: OnnxTower, users: np.ndarray) -> float:
    """The largest difference between two towers' query vectors as the similarity compares
    them (L2-normalised for cosine), over ``users``' full and halved histories padded to
    ``max_len`` and their last 5 items padded to 5 (against the same padded to ``max_len``: what
    a server that pads a batch to its longest history relies on), relative to the
    vectors' scale (``max(1, largest |component|)``): float32 sums in another order differ by
    a few units in the last place of the largest component, whatever its size."""
    similarity = run.config.similarity.build()
    items, offsets = run.histories
    starts, ends = offsets[users], offsets[users + 1]
    max_len = run.config.data.max_len
    worst = 0.0
    for cut, width in ((ends, max_len), (starts + (ends - starts) // 2, max_len),
                       (ends, min(5, max_len))):  # fmt: skip
        # The narrow batch (a server pads to its longest history) against the same items
        # padded to max_len: the graph's dynamic length and the padding invariance at once.
        history = gather_history(items, starts, cut, width)
        padded = np.pad(history, ((0, 0), (max_len - width, 0)))
        times = wide = None
        if tower.reads_times:  # each query made a day after the history's last item
            times = _times_of(run, starts, cut, width)
            wide = np.pad(times, ((0, 0), (max_len - width, 0)))
        expected = similarity.prepare(torch.from_numpy(reference(users, padded, None, wide)))
        got = similarity.prepare(torch.from_numpy(tower(users, history, None, times)))
        scale = max(1.0, float(expected.abs().max()))
        worst = max(worst, float((got - expected).abs().max()) / scale)
    return worst


def _times_of(run: RunDir, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """``[B, width + 1]`` the times of ``histories[start:end]`` (left-padded with 0), then a
    query time a day after the last of them."""
    stamps = run.history_times
    if stamps is None:
        raise ExportError(f"{run.path}: the run keeps no times of its histories")
    out = np.zeros((len(starts), width + 1), dtype=np.int64)
    out[:, :-1] = gather_history(stamps, starts, ends, width)
    out[:, -1] = out[:, -2] + 86_400
    return out


def _quantize(
    path: Path,
    reference: OnnxTower,
    kind: str,
    run: RunDir,
    retriever: Retriever,
    users: np.ndarray,
) -> dict[str, Any]:
    """Replace the checked fp32 user tower at ``path`` (``reference``: it, loaded) by its
    ``kind`` version; what it changed."""
    import onnx

    fp32_bytes = path.stat().st_size
    smaller = path.with_name(f"{kind}-{path.name}")
    with warnings.catch_warnings():  # onnxruntime's advice on pre-processing, every call
        warnings.simplefilter("ignore")
        if kind == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(path, smaller, weight_type=QuantType.QInt8)
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(path), keep_io_types=True), smaller)
    tower = OnnxTower(smaller, run.user_features)
    difference = parity(run, reference, tower, users)
    agreement = _agreement(run, retriever, reference, tower, users)
    smaller.replace(path)
    logger.info(
        "user tower %s: %.1f MB -> %.1f MB, top-10 agreement with fp32 %.3f (largest "
        "difference %.1e)", kind, fp32_bytes / 1e6, path.stat().st_size / 1e6, agreement,
        difference,
    )  # fmt: skip
    return {
        "kind": kind,
        "fp32_bytes": fp32_bytes,
        "bytes": path.stat().st_size,
        "parity": difference,
        "agreement@10": agreement,
    }


def _agreement(
    run: RunDir, retriever: Retriever, reference: OnnxTower, tower: OnnxTower, users: np.ndarray
) -> float:
    """The mean share of each user's exact top 10 over the catalogue (by the reference tower's
    query of the whole history) that ``tower``'s query finds too."""
    similarity = run.config.similarity.build()
    items, offsets = run.histories
    max_len = run.config.data.max_len
    history = gather_history(items, offsets[users], offsets[users + 1], max_len)
    times = None
    if tower.reads_times:
        times = _times_of(run, offsets[users], offsets[users + 1], max_len)
    catalogue = torch.from_numpy(np.asarray(retriever.item_vectors, dtype=np.float32))
    k = min(10, len(catalogue))
    tops = []
    for query_tower in (reference, tower):
        queries = torch.from_numpy(query_tower(users, history, None, times))
        scores = similarity.pairwise(queries.reshape(-1, queries.shape[-1]), catalogue)
        scores = scores.reshape(len(users), -1)  # K interests: every interest's scores
        tops.append(scores.topk(k, dim=1).indices % len(catalogue))
    hits = (tops[1][:, :, None] == tops[0][:, None, :]).any(1).float().mean(1)
    return float(hits.mean())


def _write_report(run: RunDir, path: Path) -> None:
    """The run's report charts (the item map included), where the run has its outcomes."""
    from towerkit.reports import ReportError, RunView, report_data

    if not (run.path / OUTCOMES_FILE).exists():
        logger.info("%s has no per-user outcomes: the export carries no report", run.path)
        return
    try:
        data = report_data([RunView.load(run.path)])
    except ReportError as err:
        logger.warning("the export carries no report: %s", err)
        return
    path.write_text(json.dumps(data, allow_nan=False))


def _write_manifest(
    staging: Path,
    run: RunDir,
    kind: str,
    index: Index,
    difference: float,
    features: list[str],
    interests: int | None,
    item_tower: dict[str, Any],
    quantized: dict[str, Any] | None = None,
) -> None:
    config = run.config
    files = {
        str(p.relative_to(staging)): sha256_of(p) for p in sorted(staging.rglob("*")) if p.is_file()
    }
    model_sha = sha256_of(run.path / "model.pt")
    manifest = {
        "format": FORMAT_VERSION,
        "model": config.model.name,
        "model_version": model_sha[:16],
        "similarity": {
            "name": config.similarity.name,
            "normalize": bool(config.similarity.normalize),
        },
        "dim": index.dim,
        "interests": interests,
        "max_len": config.data.max_len,
        "n_users": len(run.user_vocab),
        "n_items": len(run.item_vocab),
        "user_features": {name: run.user_features.kinds[name] for name in features},
        "index": {"kind": kind, "options": index.options()},
        "onnx": {"opset": OPSET, "parity": difference}
        | ({"quantized": quantized} if quantized else {}),
        "item_tower": item_tower,
        "run": {"path": str(run.path.resolve()), "fingerprint": run.data["fingerprint"]},
        "versions": {name: _version(name) for name in
                     ("towerkit", "torch", "onnx", "onnxruntime")} | {"towerkit": __version__},
        "files": files,
    }  # fmt: skip
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


class ExportDir(SavedVocabularies):
    """An export directory, checked: every file of the manifest present with its sha256.

    Raises:
        ExportError: not an export, a format this towerkit does not read, a missing or
            changed file.
    """

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.url = str(path) if is_url(path) else None  # a snapshot of it is read
        self.path = storage.pull(str(path), what="export") if self.url else Path(path)
        manifest = self.path / MANIFEST_FILE
        if not manifest.is_file():
            raise ExportError(f"{self.path}: not an export directory (no {MANIFEST_FILE})")
        try:
            self.manifest = json.loads(manifest.read_text())
        except ValueError as err:
            raise ExportError(f"{manifest}: not valid JSON ({err})") from None
        if verify:
            for name, digest in self.manifest.get("files", {}).items():
                file = self.path / name
                if not file.is_file():
                    raise ExportError(f"{self.path}: {name} is missing")
                if sha256_of(file) != digest:
                    raise ExportError(f"{self.path}: {name} does not match its sha256")
        self.manifest = migrate_manifest(self.manifest, self.path)

    @property
    def version(self) -> str:
        """The exported model's version: the first 16 hex digits of its weights' sha256."""
        return self.manifest["model_version"]

    def item_tower(self) -> OnnxItemTower | None:
        """The exported item tower (ids and item features -> vectors), or None for an export
        written before towerkit exported it."""
        info = self.manifest.get("item_tower")
        if info is None:
            return None
        features = self.item_features
        features = FeatureTable(
            values={n: features.values[n] for n in info["features"]},
            kinds={n: features.kinds[n] for n in info["features"]},
            vocabs={n: v for n, v in features.vocabs.items() if n in info["features"]},
        )
        return OnnxItemTower(self.path / info["file"], features)

    def report(self) -> dict[str, Any] | None:
        """The run's report charts, or None for an export without them."""
        path = self.path / REPORT_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def retriever(
        self,
        index: str | None = None,
        threads: int = 0,
        *,
        spin: bool = True,
        **index_options: Any,
    ) -> Retriever:
        """A :class:`~towerkit.retrieval.Retriever` over this export: the ONNX tower, the
        stored vectors and histories, and the shipped index (or one of ``index`` built now).

        Args:
            threads, spin: the ONNX session's (see :class:`~towerkit.retrieval.towers.OnnxTower`).
        """
        items = pq.read_table(self.path / ITEMS_FILE)
        item_vectors = _matrix(items.column("vector"))
        titles = None
        if "title" in items.column_names:
            titles = np.concatenate([[""], items.column("title").to_numpy(zero_copy_only=False)])
        users = pq.read_table(self.path / USERS_FILE)
        times = None
        if "times" in users.column_names:
            times = users.column("times").combine_chunks().flatten().to_numpy().astype(np.int64)
        lists = users.column("history").combine_chunks()
        flat = self.item_vocab.encode(lists.flatten())  # in Arrow: no Python objects
        offsets = lists.offsets.to_numpy().astype(np.int64)
        offsets = np.concatenate([[0], offsets - offsets[0]])
        interests = self.manifest["interests"]
        stored = _matrix(users.column("vector"))  # [U, D], or [U, K * D] for K interests
        if interests is not None:
            stored = stored.reshape(len(stored), interests, self.manifest["dim"])
        user_vectors = np.concatenate([np.zeros((1, *stored.shape[1:]), np.float32), stored])
        sim = self.manifest["similarity"]
        similarity = SimilarityConfig.model_validate(sim).build()
        shipped = index is None or (index == self.manifest["index"]["kind"] and not index_options)
        attributes = item_attributes(items)
        if shipped:
            built: str | Index = load_index(self.path / INDEX_DIR)
        elif index == "milvus" and index_options.get("pinned"):
            # a collection (or an alias) written before: searched as it is, once checked
            ids = np.arange(1, len(item_vectors) + 1)
            built = MilvusIndex.attach(
                similarity, ids, item_vectors.shape[1], attributes, **index_options
            )
        else:
            built = index
        return Retriever(
            OnnxTower(self.path / TOWER_FILE, self.user_features, threads, spin=spin),
            max_len=self.manifest["max_len"],
            user_vocab=self.user_vocab,
            item_vocab=self.item_vocab,
            user_features=self.user_features,
            histories=(flat, offsets),
            item_vectors=item_vectors,
            similarity=similarity,
            titles=titles,
            user_vectors=user_vectors,
            interests=interests,
            index=built,
            attributes=attributes,
            times=times,
            **({} if isinstance(built, Index) else index_options),
        )


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    return array.flatten().to_numpy().reshape(len(array), array.type.list_size).astype(np.float32)


__all__ = ["ExportDir", "ExportError", "export_run", "migrate_manifest", "parity", "publish_items"]
