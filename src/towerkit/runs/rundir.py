"""A run directory: everything needed to use a trained model, and to resume its training.

::

    RUN/
      run.json          format, status (training | finished), towerkit version, times, the
                        machine it was trained on (device, threads), its data paths as given,
                        the sha256 of data.json, vocab/, features/, model.pt and the three
                        tables (with their rows), checked when read back
      config.yaml       the resolved experiment config: no machine settings, data paths
                        relative to the run
      data.json         fingerprint and sizes of the prepared data it was trained on
      vocab/            raw id <-> id of users, items and side-feature values (Parquet)
      features/         the encoded user and item side features the towers look up (Parquet)
      checkpoint.pt     after every epoch: weights, optimiser, scheduler, RNGs, best weights
      model.pt          the best weights (when finished)
      metrics.json      validation and test metrics, popularity baseline, per-epoch log
      timing.json       seconds per epoch and samples/s (kept apart: metrics are reproducible)
      items.parquet     item, title (when known), count (training interactions), label (a
                        categorical side attribute, when the data have one), vector
      users.parquet     user, history (raw item ids, oldest first), vector (the test query)
      outcomes.parquet  per test user: history length, targets, their ranks by the model and
                        by the popularity baseline, the model's top items (the report's and
                        `towerkit compare`'s input)
      tracking.json     the MLflow run id, with train.track: [mlflow]
      train.log         the log of `towerkit train`

Loading a run (:meth:`RunDir.load_model`, vocabularies, histories, titles) reads only this
directory: no data set is fetched or prepared, and nothing about today's machine is checked, so a
run trained on a GPU and copied to a CPU-only machine recommends, exports and serves there.

``run.json`` carries the run's ``format``. A run of an older format is read through
:data:`MIGRATIONS` (one step per format, applied in memory to ``run.json`` and the config), so a
later change of a key never strands a run written before it.
Every file is written to a temporary name and renamed into place, and ``run.json`` says
``finished`` only once everything else is written: an interrupted run is never mistaken for a
finished one, and never holds a half-written file.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from towerkit import __version__, storage
from towerkit.config import (
    MACHINE_KEYS,
    Config,
    ConfigError,
    config_from_dict,
    resolve_paths,
)
from towerkit.data.vocab import BaseVocabs, Vocab
from towerkit.errors import DataError, TowerkitError, naming
from towerkit.evaluation.outcomes import Outcomes
from towerkit.files import atomic_write, os_reason, remove_stale, sha256_of, staging_dir
from towerkit.models import MatchingModel, build_model
from towerkit.storage import Uploader, is_url
from towerkit.training.state import TrainState
from towerkit.types import FeatureTable

if TYPE_CHECKING:
    from towerkit.data.prepared import Prepared

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
VOCAB_DIR = "vocab"
FEATURES_DIR = "features"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
TIMING_FILE = "timing.json"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
OUTCOMES_FILE = "outcomes.parquet"
LOG_FILE = "train.log"
#: the log a run trained from memory carries (``towerkit.train(config, data=frame)``)
CARRIED_LOG_FILE = "log.parquet"
#: ``run.json``'s record of each output file (rows, sha256), checked when it is read back
FILES_KEY = "files"

#: The format of run directories this towerkit writes (``run.json``'s ``format``).
FORMAT_VERSION = 2
#: The data-path keys of a config, saved relative to the run directory.
DATA_PATH_KEYS = (("path",), ("users", "path"), ("items", "path"))


class RunDirError(TowerkitError, ValueError):
    """A directory that is not a usable run (missing, unfinished, or not a run at all)."""


Migration = Callable[[dict[str, Any], dict[str, Any]], None]


def _machine_out_of_config(run: dict[str, Any], config: dict[str, Any]) -> None:
    """1 -> 2: the machine's settings (``train.device``, ``threads``, ``progress``) leave the
    saved config; ``run.json`` records where the run was trained."""
    machine = {}
    for section, keys in MACHINE_KEYS.items():
        values = config.get(section) or {}
        machine[section] = {key: values.pop(key) for key in keys if key in values}
    run.setdefault("machine", machine)


#: ``MIGRATIONS[v](run_json, config_tree)`` turns format ``v`` into ``v + 1`` in place (in
#: memory: the files stay as written). A change of the saved layout adds one step here and
#: raises :data:`FORMAT_VERSION`.
MIGRATIONS: dict[int, Migration] = {1: _machine_out_of_config}


def migrate(run: dict[str, Any], config: dict[str, Any]) -> int:
    """Bring a run's ``run.json`` and config tree to :data:`FORMAT_VERSION`, in place; returns
    the format they were written in."""
    written = version = int(run.get("format", 1))
    while version < FORMAT_VERSION:
        MIGRATIONS[version](run, config)
        version += 1
        run["format"] = version
    return written


def _get(tree: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _set(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree[key]
    tree[keys[-1]] = value


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2) + "\n")


def _write_table(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` through memory: the archive inside is named for no temporary file, so the
    same object gives the same bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def vectors_column(vectors: torch.Tensor | np.ndarray) -> pa.Array:
    """``[N, D]`` vectors as a fixed-size-list float32 column (a multi-interest model's
    ``[N, K, D]`` users: K * D values per row, interest after interest)."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().float().numpy()
    array = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])


def _save_features(table: FeatureTable, path: Path) -> None:
    columns, kinds = {}, {}
    for name, values in table.values.items():
        kinds[name] = table.kinds[name]
        if values.ndim == 2:  # multi-valued: [n + 1, W] codes
            columns[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(values.reshape(-1)), values.shape[1]
            )
        else:
            columns[name] = pa.array(values)
    arrow = pa.table(columns) if columns else pa.table({"_": pa.array([], pa.int8())})
    arrow = arrow.replace_schema_metadata({"towerkit.kinds": json.dumps(kinds)})
    pq.write_table(arrow, path)


def _load_features(path: Path, vocabs: dict[str, Path], prefix: str) -> FeatureTable:
    """A features table, with the vocabularies (``{file name: path}``) of its columns."""
    with naming(str(path)):
        arrow = pq.read_table(path)
        try:
            kinds = json.loads(arrow.schema.metadata[b"towerkit.kinds"])
            missing = sorted(set(kinds) - set(arrow.column_names))
        except (KeyError, TypeError):
            raise DataError(f"{path}: not a towerkit features table (no kinds)") from None
    if missing:
        raise DataError(f"{path}: not a towerkit features table (no column {missing[0]!r})")
    table = FeatureTable()
    for name, kind in kinds.items():
        column = arrow.column(name).combine_chunks()
        if kind == "multi":
            width = column.type.list_size
            values = column.flatten().to_numpy().reshape(len(column), width).copy()
        else:
            values = column.to_numpy().copy()  # writable: the towers turn it into a buffer
        table.values[name] = values
        table.kinds[name] = kind
        vocab_file = vocabs.get(f"{prefix}.{name}.parquet")
        if vocab_file is not None:
            table.vocabs[name] = Vocab.load(vocab_file)
    return table


def _status(status: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"status": status, "towerkit": __version__, "time": now}


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _recorded(path: Path, rows: int | None = None) -> dict[str, Any]:
    """What ``run.json`` keeps of an output file, checked when it is read back."""
    return {"sha256": sha256_of(path), **({"rows": rows} if rows is not None else {})}


def _read_json(path: Path) -> dict[str, Any]:
    with naming(str(path), RunDirError):
        tree = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(tree, dict):
        raise RunDirError(f"{path}: damaged (not a JSON object)")
    return tree


def load_torch(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)``, with a file that is not one (truncated, random or
    crafted bytes) reported as such rather than as an unpickling traceback. The weights-only
    unpickler fed arbitrary bytes can fail with almost any exception (``IndexError`` from its
    mark stack, ``KeyError``, ``struct.error`` ...), so everything but an interrupt is caught."""
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 217" on garbage
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to unpickle, see the docstring
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunDirError(f"{path}: not a readable towerkit {what} file ({message})") from None


class SavedVocabularies:
    """The vocabularies and the encoded user features of a directory in the run layout
    (``vocab/``, ``features/``): what a run directory and an export directory share."""

    path: Path

    def checked(self, name: str) -> Path:
        """The path of file ``name`` (relative), once checked against what the directory
        recorded of it (here: nothing; a run directory checks its record)."""
        return self.path / name

    @cached_property
    def user_vocab(self) -> Vocab:
        return Vocab.load(self.checked(f"{VOCAB_DIR}/user.parquet"))

    @cached_property
    def item_vocab(self) -> Vocab:
        return Vocab.load(self.checked(f"{VOCAB_DIR}/item.parquet"))

    @cached_property
    def user_features(self) -> FeatureTable:
        return self._features("user")

    @cached_property
    def item_features(self) -> FeatureTable:
        return self._features("item")

    def _features(self, prefix: str) -> FeatureTable:
        path = self.checked(f"{FEATURES_DIR}/{prefix}.parquet")
        found = sorted((self.path / VOCAB_DIR).glob(f"{prefix}.*.parquet"))
        vocabs = {p.name: self.checked(f"{VOCAB_DIR}/{p.name}") for p in found}
        return _load_features(path, vocabs, prefix)


def users_table(
    prepared: Prepared, vectors: torch.Tensor | np.ndarray, *, times: bool = False
) -> pa.Table:
    """``users.parquet``: each user's raw id, whole history (raw item ids, oldest first), with
    ``times`` the history's times (epoch seconds: a model that reads them), and query vector at
    the test point."""
    encoded, sequences = prepared.encoded, prepared.split.sequences
    offsets = pa.array(sequences.offsets[1:])
    columns = {
        "user": pa.array(encoded.user_vocab.raw),
        "history": pa.ListArray.from_arrays(
            offsets, pa.array(encoded.item_vocab.decode(sequences.items))
        ),
    }
    if times:
        columns["times"] = pa.ListArray.from_arrays(offsets, pa.array(sequences.timestamps))
    return pa.table({**columns, "vector": vectors_column(vectors)})


def items_table(prepared: Prepared, vectors: torch.Tensor | np.ndarray) -> pa.Table:
    """``items.parquet``: each item's raw id, title (when known), training count, label (the
    attribute the report colours by, when known) and vector."""
    columns = {"item": pa.array(prepared.encoded.item_vocab.raw)}
    if prepared.titles is not None:
        columns["title"] = pa.array(prepared.titles[1:].astype(str))
    columns["count"] = pa.array(prepared.train_counts[1:].astype(np.int64))
    meta = {}
    if prepared.labels is not None:
        meta["label"], labels = prepared.labels
        columns["label"] = pa.array(labels[1:].astype(str))
    columns["vector"] = vectors_column(vectors)
    return pa.table(columns).replace_schema_metadata({"towerkit": json.dumps(meta)})


class RunDir(SavedVocabularies):
    """An existing run directory (see the module docstring).

    Args:
        path: the directory written by :meth:`create` (``towerkit train``), or the URL of a run
            published to a bucket (``s3://bucket/runs/a``): a local snapshot of it is read,
            downloaded once and checked against its manifest (:func:`towerkit.storage.pull`).

    Raises:
        RunDirError: the directory is missing or is not a run directory.
        StorageError: a URL with no finished run (no manifest), or a failure of the store.
    """

    #: where the run's files are uploaded as they are written (a run whose home is a bucket),
    #: set by its lifecycle; None for a local run
    uploader: Uploader | None = None

    def __init__(self, path: str | Path) -> None:
        self.url = str(path) if is_url(path) else None
        self.path = storage.pull(str(path), what="run") if self.url else Path(path)
        self._checked: dict[str, str] = {}  # outputs whose sha256 matched, by name
        if not (self.path / RUN_FILE).is_file():
            what = "does not exist" if not self.path.exists() else f"no {RUN_FILE}"
            raise RunDirError(f"{self.path}: not a run directory ({what})")
        written = int(self._run_as_written.get("format", 1))
        if written > FORMAT_VERSION:
            raise RunDirError(
                f"{self.path}: a run of format {written}, written by a newer towerkit; this one "
                f"reads formats up to {FORMAT_VERSION} (upgrade towerkit)"
            )

    def remove_stale(self) -> None:
        """Remove the temporary files a killed writer left in the run (a writer calls this:
        opening a run to read it deletes nothing)."""
        for name in (CHECKPOINT_FILE, MODEL_FILE, RUN_FILE):
            remove_stale(self.path, f".{name}.")

    def __repr__(self) -> str:
        return f"RunDir({self.location!r}, status={self.status!r})"

    @property
    def location(self) -> str:
        """Where the run lives: its URL (read from, or written to, a bucket), or its local
        path."""
        if self.url is None and self.uploader is not None:
            return self.uploader.url
        return self.url or str(self.path)

    def push(self) -> None:
        """Upload what changed in the run since the last push (a run whose home is a bucket;
        ``run.json`` last, so that its status never runs ahead of the files it describes)."""
        if self.uploader is not None:
            self.uploader.push(self.path, last=[RUN_FILE])

    # -- creating and training ----------------------------------------------------------------

    @staticmethod
    def check_new(path: str | Path) -> Path:
        """Refuse a path that exists and is not an empty directory, or that cannot be written
        (checked before any data is read)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path}: is a file, not a directory; pick another place for the run")
        if path.exists() and any(path.iterdir()):
            raise RunDirError(f"{path}: the run directory exists and is not empty; pick another")
        if path.exists() and not os.access(path, os.W_OK | os.X_OK):
            raise RunDirError(f"{path}: the run directory is not writable")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise RunDirError(f"{path}: cannot create the run directory: {ancestor} is read-only")
        return path

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: Config,
        prepared: Prepared,
        *,
        log: Path | None = None,
        warm: dict[str, Any] | None = None,
    ) -> RunDir:
        """Start a run: its config, the prepared data's vocabularies, side features and
        fingerprint, status ``training``. Written to a staging folder and renamed into place.

        Args:
            log: a Parquet log the run carries as its own ``log.parquet`` (a log given from
                memory, which no file holds); ``config.data.path`` must name it there.
            warm: a warm start's record for ``run.json`` (parent, lineage; see
                :meth:`towerkit.runs.warm.WarmStart.record`).
        """
        path = cls.check_new(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = staging_dir(path)
        except OSError as err:
            reason = os_reason(err)
            raise RunDirError(f"{path}: cannot create the run directory ({reason})") from None
        try:
            encoded = prepared.encoded
            tree, given = config.experiment(), {}
            for keys in DATA_PATH_KEYS:  # relative to the run: a run moved with its data works
                value = _get(tree["data"], keys)
                if value is not None and not is_url(value):  # (a URL is the same everywhere)
                    given[".".join(("data", *keys))] = value
                    _set(tree["data"], keys, os.path.relpath(value, path.absolute()))
            text = yaml.safe_dump(tree, sort_keys=False)
            (staging / CONFIG_FILE).write_text(text)
            source = config.data.dataset or str(config.data.path)
            data = {"source": source, **prepared.summary()}
            (staging / DATA_FILE).write_text(json.dumps(data, indent=2) + "\n")
            encoded.save_vocabs(staging / VOCAB_DIR)
            (staging / FEATURES_DIR).mkdir()
            _save_features(encoded.user_features, staging / FEATURES_DIR / "user.parquet")
            _save_features(encoded.item_features, staging / FEATURES_DIR / "item.parquet")
            recorded = [staging / DATA_FILE, *sorted((staging / VOCAB_DIR).iterdir()),
                        *sorted((staging / FEATURES_DIR).iterdir())]  # fmt: skip
            if log is not None:
                shutil.copyfile(log, staging / CARRIED_LOG_FILE)
                recorded.append(staging / CARRIED_LOG_FILE)
            status = {
                "format": FORMAT_VERSION,
                **_status("training"),
                "config_sha256": _sha256_text(text),
                "machine": config.machine(),
                "data_paths": given,
                **(warm or {}),
                FILES_KEY: {p.relative_to(staging).as_posix(): _recorded(p) for p in recorded},
            }
            (staging / RUN_FILE).write_text(json.dumps(status, indent=2) + "\n")
            if path.exists():
                path.rmdir()  # empty (checked above)
            staging.rename(path)
        except OSError as err:
            reason = os_reason(err)
            raise RunDirError(f"{path}: cannot write the run directory ({reason})") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cls(path)

    def _set_status(self, status: str) -> None:
        _write_json(self.path / RUN_FILE, {**self._run_as_written, **_status(status)})

    @property
    def _run_as_written(self) -> dict[str, Any]:
        path = self.path / RUN_FILE
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunDirError(f"{path}: not a readable run file ({err})") from None
        if not isinstance(run, dict) or "status" not in run:
            raise RunDirError(f"{path}: not a towerkit run file (no status)")
        return run

    @property
    def _run(self) -> dict[str, Any]:
        """``run.json`` brought to this towerkit's format (see :func:`migrate`)."""
        return self._migrated[0]

    @cached_property
    def _migrated(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``run.json`` (as now) and the config tree, both migrated to :data:`FORMAT_VERSION`."""
        run = self._run_as_written
        path = self.path / CONFIG_FILE
        try:
            text = path.read_text(encoding="utf-8")
            tree = yaml.safe_load(text) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise RunDirError(f"{path}: not a readable config ({err})") from None
        recorded = run.get("config_sha256")
        if recorded is not None and _sha256_text(text) != recorded:
            raise RunDirError(
                f"{path}: changed after the run started; its weights belong to the config it was "
                "trained with (restore that file, or train a new run with the new config)"
            )
        migrate(run, tree)
        return run, tree

    @property
    def machine(self) -> dict[str, Any]:
        """The machine's settings the run was trained with, e.g. ``{"train": {"device":
        "cuda", "threads": 0, "progress": True}}`` (informational: loading ignores them)."""
        return self._run.get("machine", {})

    def save_checkpoint(self, state: TrainState) -> None:
        """Write the training state after an epoch (atomically: the old one stays whole until
        the new one is complete)."""
        _write_torch(self.path / CHECKPOINT_FILE, state.to_dict())
        self.push()  # a run in a bucket resumes on another machine from this checkpoint

    def load_checkpoint(self) -> TrainState | None:
        """The last checkpoint, or None when no epoch finished."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        return TrainState.from_dict(load_torch(path, "checkpoint"))

    def finish(
        self,
        model: MatchingModel,
        prepared: Prepared,
        *,
        user_vectors: torch.Tensor | np.ndarray,
        item_vectors: torch.Tensor | np.ndarray,
        metrics: dict[str, Any],
        timing: dict[str, Any],
        outcomes: Outcomes | None = None,
    ) -> None:
        """Write the trained model and its outputs (``users.parquet`` and ``items.parquet``
        from the prepared data and the vectors: each user's query at the test point, ``[U, D]``
        or ``[U, K, D]``, and each item's vector, ``[N, D]``), then mark the run finished."""
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _write_torch(self.path / MODEL_FILE, {"state_dict": state})
        users = users_table(prepared, user_vectors, times=model.reads_times)
        items = items_table(prepared, item_vectors)
        _write_table(self.path / USERS_FILE, users)
        _write_table(self.path / ITEMS_FILE, items)
        files = {
            MODEL_FILE: _recorded(self.path / MODEL_FILE),
            USERS_FILE: _recorded(self.path / USERS_FILE, users.num_rows),
            ITEMS_FILE: _recorded(self.path / ITEMS_FILE, items.num_rows),
        }
        if outcomes is not None:
            table = outcomes.to_table()
            _write_table(self.path / OUTCOMES_FILE, table)
            files[OUTCOMES_FILE] = _recorded(self.path / OUTCOMES_FILE, table.num_rows)
        _write_json(self.path / METRICS_FILE, metrics)
        _write_json(self.path / TIMING_FILE, timing)
        run = self._run_as_written
        _write_json(
            self.path / RUN_FILE,
            {**run, **_status("finished"), FILES_KEY: {**run.get(FILES_KEY, {}), **files}},
        )

    def update_metrics(self, stages: dict[str, Any]) -> None:
        """Add (or replace) stages of a finished run's ``metrics.json`` (the test stage of a
        run trained without it)."""
        metrics = {**self.metrics, **stages}
        _write_json(self.path / METRICS_FILE, metrics)
        self.__dict__["metrics"] = metrics

    def write_outcomes(self, outcomes: Outcomes) -> None:
        """(Re)write the test stage's per-user outcomes (``towerkit evaluate --save``)."""
        table = outcomes.to_table()
        _write_table(self.path / OUTCOMES_FILE, table)
        run = self._run_as_written
        files = {**run.get(FILES_KEY, {}), OUTCOMES_FILE: _recorded(self.path / OUTCOMES_FILE,
                                                                   table.num_rows)}  # fmt: skip
        _write_json(self.path / RUN_FILE, {**run, FILES_KEY: files})

    def checked(self, name: str) -> Path:
        """The path of file ``name`` (relative: ``data.json``, ``vocab/...``, ``features/...``,
        ``model.pt``, ``users.parquet``, ``items.parquet``, ``outcomes.parquet``), checked
        against the sha256 (and the rows of a table) that ``run.json`` recorded when it was
        written. A run written before towerkit recorded them is not checked: its damaged files
        are still one line each, through :func:`~towerkit.errors.naming`.

        Raises:
            RunDirError: the file is missing, or not the one the run wrote (its rows or its
                checksum differ), with how to write it again.
        """
        path = self.path / name
        recorded = self._run_as_written.get(FILES_KEY, {}).get(name)
        if recorded is None or self._checked.get(name) == recorded["sha256"]:
            return path
        again = (
            f"write it again with: towerkit evaluate {self.path} --save"
            if name == OUTCOMES_FILE
            else "restore it, or train the run again"
        )
        if not path.is_file():
            raise RunDirError(f"{path}: missing, though the run wrote it; {again}")
        if sha256_of(path) == recorded["sha256"]:
            self._checked[name] = recorded["sha256"]  # read once per RunDir
            return path
        rows = recorded.get("rows")
        if rows is not None:
            try:
                found = pq.read_metadata(path).num_rows
            except (OSError, pa.ArrowException):
                found = None
            if found is not None and found != rows:
                raise RunDirError(
                    f"{path}: {found:,} rows where the run wrote {rows:,} (cut short, or "
                    f"replaced); {again}"
                )
        raise RunDirError(
            f"{path}: not the file the run wrote (its sha256 differs: damaged or replaced); {again}"
        )

    # -- reading ----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``"training"`` (unfinished: resumable) or ``"finished"``."""
        return self._run_as_written["status"]

    @property
    def finished(self) -> bool:
        """Whether training finished (``run.json`` says so)."""
        return self.status == "finished"

    @property
    def epochs_done(self) -> int:
        """Epochs in the last checkpoint (0 when none finished)."""
        state = self.load_checkpoint()
        return 0 if state is None else state.epoch

    def require_finished(self) -> None:
        """Raise, with the command that resumes it, when the run is unfinished."""
        if not self.finished:
            epochs = self.config.train.epochs
            raise RunDirError(
                f"{self.path}: the run is unfinished ({self.epochs_done} of {epochs} epochs "
                f"trained); resume it with: towerkit train --resume {self.path}"
            )

    @cached_property
    def config(self) -> Config:
        """The run's experiment config, as it was when the run started (an edited config.yaml
        is refused: the weights belong to the original), with this machine's defaults for the
        machine's settings (see :meth:`Config.on_machine`). Nothing here inspects the machine.

        Data paths are saved relative to the run; where the data are not found there, the paths
        as given when the run started are used (:meth:`require_data` says when neither holds).
        """
        tree = copy.deepcopy(self._migrated[1])
        tree = resolve_paths(tree, self.path)
        for dotted, given in self._run.get("data_paths", {}).items():
            keys = tuple(dotted.split("."))[1:]
            here = _get(tree.get("data") or {}, keys)
            if here is None or is_url(here):
                continue
            if not Path(here).exists() and Path(given).exists():
                _set(tree["data"], keys, given)
        try:
            return config_from_dict(tree, source=str(self.path / CONFIG_FILE), machine=False)
        except ConfigError as err:
            raise RunDirError(str(err)) from None

    def require_writable(self) -> None:
        """Raise when this process cannot write in the run directory (a run resumed there
        writes a checkpoint after every epoch): before any data is read, not an epoch in."""
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(
                f"{self.path}: the run directory is not writable, and resuming writes a "
                "checkpoint after every epoch; copy the run somewhere writable and resume it there"
            )

    def require_data(self) -> None:
        """Raise, naming the key, when the run's own log or side tables are not found here
        (``evaluate`` and ``--resume`` read the data the run was trained on)."""
        data = self.config.data
        given = self._run.get("data_paths", {})
        for keys in DATA_PATH_KEYS:
            value = _get(data.model_dump(), keys)
            if value is not None and not is_url(value) and not Path(value).exists():
                dotted = ".".join(("data", *keys))
                also = f" nor at {given[dotted]}" if dotted in given else ""
                raise RunDirError(
                    f"{self.path}: {dotted} of the run is not found at {value}{also}; put the "
                    "data the run was trained on there"
                )

    @cached_property
    def data(self) -> dict[str, Any]:
        """The fingerprint and sizes of the data the run was trained on."""
        return _read_json(self.checked(DATA_FILE))

    @cached_property
    def metrics(self) -> dict[str, Any]:
        self.require_finished()
        return _read_json(self.path / METRICS_FILE)

    @property
    def parent(self) -> str | None:
        """The run this one continued (a warm start; its path when it started), or None."""
        return self._run.get("parent")

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """A warm-started run's generations, the first first and this one last: each one's run
        (None for this one) and data fingerprint and sizes. Empty for a run trained from
        scratch."""
        return list(self._run.get("lineage", []))

    def base_vocabs(self) -> BaseVocabs:
        """The run's vocabularies, as a warm start extends them (and as re-preparing a
        warm-started run's own log numbers its ids)."""
        return BaseVocabs(
            self.user_vocab,
            self.item_vocab,
            dict(self.user_features.vocabs),
            dict(self.item_features.vocabs),
        )

    def build_model(self) -> MatchingModel:
        """The run's model with freshly initialised weights (global RNG left untouched)."""
        with torch.random.fork_rng(devices=[]):
            return build_model(
                self.config.model,
                n_users=len(self.user_vocab),
                n_items=len(self.item_vocab),
                max_len=self.config.data.max_len,
                user_features=self.user_features,
                item_features=self.item_features,
            )

    def load_model(self) -> MatchingModel:
        """The trained model, in eval mode, on the CPU (the run must be finished)."""
        self.require_finished()
        model = self.build_model()
        saved = load_torch(self.checked(MODEL_FILE), "model")
        try:
            model.load_state_dict(saved["state_dict"])
        except (KeyError, TypeError, RuntimeError) as err:
            message = str(err).splitlines()[0]
            raise RunDirError(
                f"{self.path / MODEL_FILE}: the weights do not fit the run's config ({message})"
            ) from None
        return model.eval()

    @cached_property
    def titles(self) -> np.ndarray | None:
        """Titles by item id (index 0 is padding), or None when the data set has none."""
        self.require_finished()
        table = pq.read_table(self.checked(ITEMS_FILE))
        if "title" not in table.column_names:
            return None
        return np.concatenate([[""], table.column("title").to_numpy(zero_copy_only=False)])

    @cached_property
    def histories(self) -> tuple[np.ndarray, np.ndarray]:
        """Every known user's items, oldest first, as CSR over encoded ids: user ``u``'s items
        are ``items[offsets[u]:offsets[u + 1]]`` (user 0, padding, has none)."""
        self.require_finished()
        table = pq.read_table(self.checked(USERS_FILE), columns=["user", "history"])
        users = self.user_vocab.encode(table.column("user").to_numpy(zero_copy_only=False))
        if not np.array_equal(users, np.arange(1, len(self.user_vocab) + 1)):
            raise RunDirError(f"{self.path / USERS_FILE}: users are not one row each, in id order")
        lists = table.column("history").combine_chunks()
        items = self.item_vocab.encode(lists.flatten().to_numpy(zero_copy_only=False))
        offsets = lists.offsets.to_numpy().astype(np.int64)
        offsets = np.concatenate([[0], offsets - offsets[0]])
        return items, offsets

    @cached_property
    def history_times(self) -> np.ndarray | None:
        """The epoch seconds of :attr:`histories`' items, aligned with them, where the model
        reads them (else None: the run keeps none)."""
        self.require_finished()
        path = self.checked(USERS_FILE)
        if "times" not in pq.read_schema(path).names:
            return None
        lists = pq.read_table(path, columns=["times"]).column("times").combine_chunks()
        return lists.flatten().to_numpy().astype(np.int64)
