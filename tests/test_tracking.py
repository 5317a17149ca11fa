"""Experiment tracking (issue 24): real MLflow (an SQLite store) and real TensorBoard event
files, read back through ``MlflowClient`` and TensorBoard's event reader, hold what
``metrics.json`` holds; a missing extra is named with its install command; a tracker that fails
does not stop training. (Under torchrun only rank 0 logs: tests/test_distributed.py.)"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ctrl_c_after_the_first_checkpoint, small_config
from towerkit.config import ConfigError
from towerkit.errors import MissingExtra
from towerkit.runs import pipeline, tracking
from towerkit.runs.tracking import metric_key


def test_metric_keys_params_and_artefacts_beside_an_sqlite_store():
    assert metric_key("valid", "hr@10") == "valid/hr_at_10"
    assert tracking.artifact_location("sqlite:////srv/ml/mlflow.db") == "file:///srv/ml/mlartifacts"
    assert tracking.artifact_location("http://tracking:5000") is None
    params = tracking.flat_params({"model": {"name": "sasrec", "hidden": [32, 16]}, "a": {}})
    assert params == {"model.name": "sasrec", "model.hidden": "[32, 16]", "a": "{}"}


@pytest.fixture(scope="module")
def tracked(walk_prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = small_config(train={"epochs": 3, "patience": 0, "track": ["tensorboard", "mlflow"],
                                 "mlflow_uri": uri, "mlflow_experiment": "tests"})  # fmt: skip
    outcome = pipeline.train(config, walk_prepared, run=root / "run")
    return outcome, uri


def test_mlflow_holds_the_metrics_of_metrics_json(tracked):
    from mlflow.tracking import MlflowClient

    outcome, uri = tracked
    run_dir = outcome.run.path
    metrics = json.loads((run_dir / "metrics.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    run_id = mlflow_run.info.run_id
    assert json.loads((run_dir / "tracking.json").read_text()) == {"mlflow_run_id": run_id}
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"
    for name in ("hr@10", "ndcg@10", "mrr@10"):
        history = client.get_metric_history(run_id, metric_key("valid", name))
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (e["epoch"], pytest.approx(e["valid"][name])) for e in metrics["train"]["epochs"]
        ]
    assert mlflow_run.data.metrics["test/hr_at_10"] == pytest.approx(metrics["test"]["hr@10"])
    assert mlflow_run.data.metrics["popularity/hr_at_10"] == pytest.approx(
        metrics["popularity"]["hr@10"]
    )
    steps = client.get_metric_history(run_id, "train/loss")
    per_epoch = len(steps) // 3
    assert len(steps) == 3 * per_epoch > 3 and sorted(m.step for m in steps)[-1] == len(steps)
    first_epoch = [m.value for m in steps if m.step <= per_epoch]
    assert np.mean(first_epoch) == pytest.approx(metrics["train"]["epochs"][0]["loss"], rel=1e-6)
    params = mlflow_run.data.params
    assert params["model.name"] == "youtube_dnn" and params["train.epochs"] == "3"
    # artefacts beside the SQLite file, not in whatever directory training ran from
    assert mlflow_run.info.artifact_uri.startswith(tracking.artifact_location(uri))
    assert mlflow_run.info.artifact_uri.startswith(
        "file://" + uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    )
    artefacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "config.yaml", "model.pt", "outcomes.parquet"} <= artefacts
    assert "checkpoint.pt" not in artefacts


def test_tensorboard_holds_the_metrics_of_metrics_json(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome, _ = tracked
    run_dir = outcome.run.path
    metrics = json.loads((run_dir / "metrics.json").read_text())
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for name in ("hr@10", "ndcg@50"):
        scalars = events.Scalars(metric_key("valid", name))
        assert [(s.step, s.value) for s in scalars] == [
            (e["epoch"], pytest.approx(e["valid"][name], abs=1e-6))
            for e in metrics["train"]["epochs"]
        ]
    losses = events.Scalars("epoch/loss")
    assert [s.value for s in losses] == pytest.approx(
        [e["loss"] for e in metrics["train"]["epochs"]], abs=1e-6
    )
    assert len(events.Scalars("train/loss")) > 3
    assert events.Scalars("test/hr_at_10")[0].value == pytest.approx(metrics["test"]["hr@10"])
    assert "config/text_summary" in events.Tags()["tensors"]


def test_a_missing_tracker_is_named_with_its_install_command(walk_prepared, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    config = small_config(train={"track": ["mlflow"]})
    with pytest.raises(MissingExtra, match=r"train\.track: mlflow is not installed; pip install "
                                           r"'towerkit\[mlflow\]'"):  # fmt: skip
        pipeline.train(config, walk_prepared, run=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_tracking_server_that_does_not_answer_is_one_line_before_any_work(
    walk_prepared, tmp_path
):
    """A refused port: refused at once, where MLflow's client would retry for minutes."""
    from conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    config = small_config(train={"track": ["mlflow"], "mlflow_uri": uri})
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"train\.mlflow_uri {uri}: no tracking server answers"):
        pipeline.train(config, walk_prepared, run=tmp_path / "run")
    assert time.monotonic() - start < 10 and not (tmp_path / "run").exists()


def test_an_mlflow_store_that_would_fail_is_one_line_naming_it_before_any_work(
    walk_prepared, tmp_path, monkeypatch
):
    """An SQLite file in a folder that cannot be written (MLflow retried it for 105 s), one
    that is no database, and a folder store the installed MLflow refuses on first use (the run
    trained on with tracking off): each is refused at once, naming the path."""
    real = os.access  # checked with os.access, so that it holds for root too
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == locked else real(p, m))
    garbage = tmp_path / "notes.db"
    garbage.write_text("not sqlite")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cases = {
        f"sqlite:///{locked / 'mlflow.db'}": f"cannot create {locked / 'mlflow.db'}: {locked} is",
        f"sqlite:///{garbage}": f"{garbage} is not an SQLite database",
        f"sqlite:///{tmp_path / 'no' / 'm.db'}": f"no folder {tmp_path / 'no'} to create m.db",
        str(tmp_path / "store"): f"use sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
    }
    for uri, message in cases.items():
        config = small_config(train={"track": ["mlflow"], "mlflow_uri": uri})
        start = time.monotonic()
        with pytest.raises(ConfigError, match=re.escape(f"train.mlflow_uri {uri}: ")) as err:
            pipeline.train(config, walk_prepared, run=tmp_path / "run")
        assert message in str(err.value) and "\n" not in str(err.value)
        assert time.monotonic() - start < 10 and not (tmp_path / "run").exists()
    assert garbage.read_text() == "not sqlite" and not (tmp_path / "store").exists()
    # MLflow's own default is checked too, named as such
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{garbage}")
    config = small_config(train={"track": ["mlflow"]})
    with pytest.raises(ConfigError, match=r"MLflow's tracking URI sqlite:///.*not an SQLite"):
        pipeline.train(config, walk_prepared, run=tmp_path / "run")


def test_a_failing_tracker_does_not_stop_training(walk_prepared, monkeypatch, tmp_path, caplog):
    def broken(self, log):
        raise ConnectionError("the tracking server went away")

    monkeypatch.setattr(tracking.TensorBoardTracker, "log_epoch", broken)
    config = small_config(train={"epochs": 2, "track": ["tensorboard"]})
    with caplog.at_level(logging.WARNING, logger="towerkit.runs.tracking"):
        outcome = pipeline.train(config, walk_prepared, run=tmp_path / "run")
    assert outcome.run.finished
    warnings = [r.getMessage() for r in caplog.records if r.name == "towerkit.runs.tracking"]
    assert warnings == ["tensorboard tracking failed and is off for this run: the tracking "
                        "server went away"]  # fmt: skip


def test_a_resumed_run_logs_to_the_same_mlflow_run(walk_prepared, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = small_config(train={"epochs": 3, "patience": 0, "track": ["mlflow"],
                                 "mlflow_uri": uri})  # fmt: skip
    with ctrl_c_after_the_first_checkpoint(), pytest.raises(KeyboardInterrupt):
        pipeline.train(config, walk_prepared, run=tmp_path / "run")
    client = MlflowClient(tracking_uri=uri)
    (stopped,) = client.search_runs([client.get_experiment_by_name("towerkit").experiment_id])
    assert stopped.info.status == "KILLED"
    pipeline.resume(tmp_path / "run", walk_prepared)
    (resumed,) = client.search_runs([client.get_experiment_by_name("towerkit").experiment_id])
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    history = client.get_metric_history(resumed.info.run_id, "valid/hr_at_10")
    assert sorted(m.step for m in history) == [1, 2, 3]
