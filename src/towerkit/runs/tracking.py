"""Experiment tracking: a training run logged to the trackers a team already runs.

``train.track: [tensorboard, mlflow]`` logs, for each tracker:

- the config, as parameters (MLflow: one per dotted key; TensorBoard: the YAML as text);
- the loss of every step (``train/loss`` at the global step);
- each epoch's mean loss, learning rate, temperature and validation metrics (``epoch/loss``,
  ``epoch/lr``, ``epoch/temperature``, ``valid/hr_at_10``, ... at the epoch number);
- once finished, the test metrics and the popularity baseline's (``test/...``,
  ``popularity/...`` at the best epoch), and for MLflow the run directory's files as artefacts
  (all but the checkpoint).

Metric names spell ``@`` as ``_at_`` (MLflow refuses ``@`` in a key): :func:`metric_key`.
Under torchrun only rank 0 logs (the pipeline makes trackers on rank 0 only). A tracker that
fails while training (a tracking server gone) is reported once and dropped: tracking never
stops a run. MLflow's run id is kept in ``RUN/tracking.json``, so a resumed run goes on logging
to the same MLflow run.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from towerkit.config import Config, ConfigError
from towerkit.errors import MissingExtra
from towerkit.runs import CHECKPOINT_FILE, RunDir
from towerkit.training.state import EpochLog

logger = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"

#: the module each tracker needs, and the extra that installs it
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def metric_key(stage: str, name: str) -> str:
    """``valid``, ``hr@10`` -> ``valid/hr_at_10``."""
    return f"{stage}/{name.replace('@', '_at_')}"


def require_trackers(names: Sequence[str], mlflow_uri: str | None = None) -> None:
    """Raise :class:`MissingExtra` naming the install command for a tracker not installed,
    and :class:`ConfigError` for an MLflow server that does not answer a connection within
    :data:`CONNECT_SECONDS` (MLflow's own client would retry for minutes before the first
    epoch)."""
    for name in names:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(
                f"train.track: {name} is not installed; pip install 'towerkit[{extra}]'"
            )
    if "mlflow" in names:
        check_mlflow_store(mlflow_uri)


#: how long the check before a run waits for a tracking server to accept a connection
CONNECT_SECONDS = 5.0


def check_mlflow_store(uri: str | None) -> None:
    """Refuse, in one line naming the key and the path, a tracking store MLflow would fail on
    only once training began, or after minutes: a server that does not answer, an SQLite file
    that cannot be written or is no database (MLflow retries it for over 100 s), a directory
    store the installed MLflow no longer writes to. ``None``: MLflow's own default
    (``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory)."""
    if uri is None:
        import mlflow

        uri, key = mlflow.get_tracking_uri(), "MLflow's tracking URI"
    else:
        key = "train.mlflow_uri"
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme in ("http", "https"):
        _check_server(uri, key)
    elif parsed.scheme == "sqlite":
        _check_sqlite(uri, key)
    elif parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # a folder (or C:\...)
        _check_file_store(uri, key)


def _check_server(uri: str, key: str) -> None:
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_SECONDS):
            pass
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ConfigError(
            f"{key} {uri}: no tracking server answers ({reason}); start it, or take mlflow "
            "out of train.track"
        ) from None


def _check_sqlite(uri: str, key: str) -> None:
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        return
    database = Path(path)
    if database.is_dir():
        raise ConfigError(f"{key} {uri}: {database} is a folder, not an SQLite file")
    if database.exists():
        with open(database, "rb") as handle:
            header = handle.read(16)
        if header and header != b"SQLite format 3\x00":
            raise ConfigError(
                f"{key} {uri}: {database} is not an SQLite database; name another file"
            )
        if not os.access(database, os.R_OK | os.W_OK):
            raise ConfigError(f"{key} {uri}: {database} is not writable")
        return
    folder = database.parent
    if not folder.is_dir():
        raise ConfigError(f"{key} {uri}: no folder {folder} to create {database.name} in")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {uri}: cannot create {database}: {folder} is not writable")


def _check_file_store(uri: str, key: str) -> None:
    """MLflow 3's directory store raises on first use unless ``MLFLOW_ALLOW_FILE_STORE``."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    if MLFLOW_ALLOW_FILE_STORE.get():
        return
    folder = urllib.parse.urlsplit(uri).path if uri.startswith("file:") else uri
    raise ConfigError(
        f"{key} {uri}: the installed MLflow ({mlflow.__version__}) no longer writes to a "
        f"folder; use sqlite:///{Path(folder, 'mlflow.db')} (or set "
        "MLFLOW_ALLOW_FILE_STORE=true to keep the folder store)"
    )


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{dotted key: value as text}`` (lists and empty sections as JSON)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def _epoch_metrics(log: EpochLog) -> dict[str, float]:
    values = {
        "epoch/loss": log.loss,
        "epoch/lr": log.lr,
        "epoch/temperature": log.temperature,
        "epoch/seconds": log.seconds,
    }
    values.update({metric_key("valid", name): value for name, value in log.valid.items()})
    return {key: float(value) for key, value in values.items() if value == value}  # no NaN


def _final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for stage in ("test", "popularity"):
        for name, value in (metrics.get(stage) or {}).items():
            out[metric_key(stage, name)] = float(value)
    return out


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of an SQLite store keeps its artefacts: ``mlartifacts/`` beside
    the database file (MLflow's own default would be the working directory of
    whoever trained first). None: the store's default (a directory store, a server)."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))  # sqlite:////abs/x.db -> /abs/x.db
    return (database.resolve().parent / "mlartifacts").as_uri()


class Tracker(Protocol):
    """What a run reports to: TensorBoard, MLflow, or several (:class:`Trackers`)."""

    def log_step(self, step: int, loss: float) -> None:
        """The training loss at optimiser step ``step``."""

    def log_epoch(self, log: EpochLog) -> None:
        """An epoch's loss, learning rate, temperature and validation metrics."""

    def finish(self, metrics: dict[str, Any], best_epoch: int) -> None:
        """The run's final metrics (at its best epoch), and for MLflow its files as artifacts."""

    def close(self, status: str = "FINISHED") -> None:
        """End the tracked run with ``status`` (``FINISHED``, ``KILLED``, ``FAILED``)."""


class TensorBoardTracker(Tracker):
    """Event files written by torch's ``SummaryWriter`` (read by TensorBoard)."""

    def __init__(self, config: Config, run: RunDir | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if config.train.tensorboard_dir is not None:
            log_dir = Path(config.train.tensorboard_dir)
            if run is not None:
                log_dir = log_dir / run.path.name
        elif run is not None:
            log_dir = run.path / TENSORBOARD_DIR
        else:
            log_dir = Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))
        text = yaml.safe_dump(config.experiment(), sort_keys=False)
        self.writer.add_text("config", f"```yaml\n{text}```")
        logger.info("tensorboard: logging to %s", log_dir)

    def log_step(self, step: int, loss: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)

    def log_epoch(self, log: EpochLog) -> None:
        for key, value in _epoch_metrics(log).items():
            self.writer.add_scalar(key, value, log.epoch)
        self.writer.flush()

    def finish(self, metrics: dict[str, Any], best_epoch: int) -> None:
        for key, value in _final_metrics(metrics).items():
            self.writer.add_scalar(key, value, best_epoch)

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """A run of an MLflow experiment, through ``MlflowClient`` (no global MLflow state).

    Step losses are buffered and sent with ``log_batch`` at each epoch's end (MLflow takes at
    most 1,000 metrics a call): a step costs no round trip to the store."""

    BATCH = 1000

    def __init__(self, config: Config, run: RunDir | None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=config.train.mlflow_uri)
        self.run_dir = run
        saved = self._saved_run_id(run)
        if saved is not None:
            self.run_id = saved
            self.client.update_run(saved, status="RUNNING")
            logger.info("mlflow: resuming run %s", saved)
        else:
            name = config.train.mlflow_experiment
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(
                    name, artifact_location=artifact_location(self.client.tracking_uri)
                )
            )
            created = self.client.create_run(
                experiment_id,
                run_name=run.path.name if run is not None else None,
                tags={"towerkit.model": config.model.name,
                      **({"towerkit.run_dir": str(run.path.resolve())} if run else {})},
            )  # fmt: skip
            self.run_id = created.info.run_id
            self._log_params(flat_params(config.experiment()))
            if run is not None:
                (run.path / TRACKING_FILE).write_text(json.dumps({"mlflow_run_id": self.run_id}))
            logger.info(
                "mlflow: run %s in experiment %r at %s",
                self.run_id, name, self.client.tracking_uri,
            )  # fmt: skip
        self.pending: list[Any] = []

    @staticmethod
    def _saved_run_id(run: RunDir | None) -> str | None:
        if run is None or not (run.path / TRACKING_FILE).exists():
            return None
        return json.loads((run.path / TRACKING_FILE).read_text()).get("mlflow_run_id")

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in params.items()]
        for begin in range(0, len(items), 100):  # MLflow's limit of parameters per call
            self.client.log_batch(self.run_id, params=items[begin : begin + 100])

    def _metric(self, key: str, value: float, step: int):
        from mlflow.entities import Metric

        return Metric(key, float(value), int(time.time() * 1000), int(step))

    def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[: self.BATCH], self.pending[self.BATCH :]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_step(self, step: int, loss: float) -> None:
        self.pending.append(self._metric("train/loss", loss, step))
        if len(self.pending) >= 10 * self.BATCH:
            self._flush()

    def log_epoch(self, log: EpochLog) -> None:
        self.pending += [self._metric(k, v, log.epoch) for k, v in _epoch_metrics(log).items()]
        self._flush()

    def finish(self, metrics: dict[str, Any], best_epoch: int) -> None:
        self.pending += [self._metric(k, v, best_epoch) for k, v in _final_metrics(metrics).items()]
        self._flush()
        self.client.set_tag(self.run_id, "towerkit.best_epoch", str(best_epoch))
        if self.run_dir is not None:
            for path in sorted(self.run_dir.path.iterdir()):
                if path.name in (CHECKPOINT_FILE, TENSORBOARD_DIR) or path.name.startswith("."):
                    continue
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
                else:
                    self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        self._flush()
        self.client.set_terminated(self.run_id, status=status)


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


class Trackers(Tracker):
    """Every tracker of ``train.track``, each dropped (with one warning) once it fails: tracking
    never stops training."""

    def __init__(self, config: Config, run: RunDir | None) -> None:
        require_trackers(config.train.track)  # the server was reached by pipeline.checked
        self.trackers: dict[str, Tracker] = {}
        for name in config.train.track:
            self._call(name, lambda name=name: self.trackers.__setitem__(
                name, TRACKERS[name](config, run)))  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _call(self, name: str, action) -> None:
        try:
            action()
        except Exception as err:  # a tracker's failure must not end the run
            logger.warning("%s tracking failed and is off for this run: %s", name, err)
            self.trackers.pop(name, None)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.trackers.items()):
            self._call(name, lambda tracker=tracker: getattr(tracker, method)(*args))

    def log_step(self, step: int, loss: float) -> None:
        self._each("log_step", step, loss)

    def log_epoch(self, log: EpochLog) -> None:
        self._each("log_epoch", log)

    def finish(self, metrics: dict[str, Any], best_epoch: int) -> None:
        self._each("finish", metrics, best_epoch)

    def close(self, status: str = "FINISHED") -> None:
        self._each("close", status)
