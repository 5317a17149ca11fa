"""Logs, runs and exports in object storage, against a real S3-compatible server on loopback
(moto's server mode behind a counting, fault-injecting proxy: :mod:`s3server`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import towerkit, walk_log

pytest.importorskip("s3fs")
pytest.importorskip("moto")

import s3server
from s3server import SECRET_KEY, Rule

DAYS = ("2026-12-01", "2026-12-02", "2026-12-03")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, this module's environment pointed at it, and an empty towerkit home."""
    server = s3server.start()
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**server.env(), "TOWERKIT_HOME": str(home)}.items():
            patch.setenv(key, value)
        s3server.clear_clients()
        import fsspec

        fs = fsspec.filesystem("s3")
        for bucket in ("logs", "runs"):
            fs.mkdir(bucket)
        _upload_log(fs)
        yield server
        s3server.clear_clients()
    server.stop()


def _log() -> pd.DataFrame:
    """A learnable log (walks over 80 items) with a day per third of each user's walk."""
    lengths = np.random.default_rng(3).integers(12, 30, 150)
    frame = walk_log(lengths, 80, noise=0.0, seed=3).frame[["user", "item", "timestamp"]]
    position = frame.groupby("user").cumcount() / frame.groupby("user")["item"].transform("size")
    frame["dt"] = np.asarray(DAYS)[np.minimum((position * 3).astype(int), 2)]
    return frame


def _upload_log(fs) -> None:
    """``s3://logs/events/dt=DAY/part-{0,1}.parquet``, as Spark writes a partitioned log."""
    frame = _log()
    for day, rows in frame.groupby("dt"):
        rows = rows.drop(columns="dt")
        for part, half in enumerate(np.array_split(np.arange(len(rows)), 2)):
            with fs.open(f"logs/events/dt={day}/part-{part}.parquet", "wb") as handle:
                rows.iloc[half].to_parquet(handle, index=False)
    fs.pipe("logs/events/_SUCCESS", b"")


def _config(tmp_path: Path, name: str = "s3.yaml", **data) -> Path:
    tree = {
        "data": {"path": "s3://logs/events/", "max_len": 10, **data},
        "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
        "temperature": {"value": 0.1},
        "train": {"epochs": 3, "batch_size": 128, "lr": 0.01, "progress": False},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def _objects(prefix: str) -> dict[str, bytes]:
    import fsspec

    fs = fsspec.filesystem("s3")
    return {key: fs.cat_file(key) for key in fs.find(prefix)}


@pytest.fixture(scope="module")
def bucket_run(s3, tmp_path_factory):
    """A run trained on the partitioned log in the bucket, written to the bucket."""
    folder = tmp_path_factory.mktemp("config")
    done = towerkit("-q", "train", str(_config(folder)), "--out", "s3://runs/a")
    assert done.returncode == 0, done.stderr
    return "s3://runs/a", done


# --------------------------------------------------------------------------------------------
# Logs in a bucket
# --------------------------------------------------------------------------------------------


def test_a_partitioned_log_in_a_bucket_trains_and_fingerprints_what_was_read(
    s3, bucket_run, tmp_path
):
    from towerkit.config import load_config
    from towerkit.runs import RunDir, pipeline

    url, done = bucket_run
    assert f"run written to {url}" in done.stdout
    run = RunDir(url)
    assert run.finished and run.url == url
    metrics = run.metrics
    assert metrics["test"]["hr@10"] > metrics["popularity"]["hr@10"]
    # data.json: every Parquet object read, with its size and ETag (not _SUCCESS)
    objects = run.data["objects"]
    assert [o["url"] for o in objects] == [
        f"s3://logs/events/dt={day}/part-{part}.parquet" for day in DAYS for part in (0, 1)
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", o["etag"]) and o["size"] > 0 for o in objects)
    # the same rows read from a local copy give the same fingerprint (the content's)
    local = tmp_path / "events"
    for day, rows in _log().groupby("dt"):
        (local / f"dt={day}").mkdir(parents=True)
        rows.drop(columns="dt").to_parquet(local / f"dt={day}" / "part-0.parquet", index=False)
    config = load_config(_config(tmp_path), [f"data.path={local}"])
    assert pipeline.prepare(config.data, progress=False).fingerprint == run.data["fingerprint"]
    # the config keeps the URL as given (not made relative to the run)
    assert yaml.safe_load((run.path / "config.yaml").read_text())["data"]["path"] == (
        "s3://logs/events/"
    )


def test_partition_folders_are_columns_and_a_changed_object_changes_the_record(s3, tmp_path):
    from towerkit import storage
    from towerkit.data.readers import read_table

    fetched = storage.fetch("s3://logs/events/", lambda key: key.endswith(".parquet"))
    frame = read_table(fetched.path)
    assert sorted(frame["dt"].unique()) == list(DAYS)
    assert len(frame) == len(_log())
    again = storage.fetch("s3://logs/events/", lambda key: key.endswith(".parquet"))
    assert again.path == fetched.path  # the same objects: the same view, nothing downloaded


def test_a_filter_on_one_day_downloads_only_that_days_objects(s3, tmp_path, monkeypatch):
    from towerkit.config import load_config
    from towerkit.runs import pipeline

    monkeypatch.setenv("TOWERKIT_HOME", str(tmp_path / "home"))  # nothing cached
    config = load_config(_config(tmp_path), ["data.partitions={dt: [2026-12-02]}"])
    s3.forget()
    prepared = pipeline.prepare(config.data, progress=False)
    assert sorted(s3.gets("logs")) == [f"events/dt=2026-12-02/part-{p}.parquet" for p in (0, 1)]
    assert len(prepared.encoded) == int((_log()["dt"] == "2026-12-02").sum())
    assert [o["url"].split("/")[4] for o in prepared.objects] == ["dt=2026-12-02"] * 2
    # a range from the second day on: the third day's objects come now, the second's are cached
    s3.forget()
    ranged = load_config(_config(tmp_path), ["data.partitions={dt: {min: 2026-12-02}}"])
    pipeline.prepare(ranged.data, progress=False)
    assert sorted(s3.gets("logs")) == [f"events/dt=2026-12-03/part-{p}.parquet" for p in (0, 1)]
    # the same filter again reads nothing from the bucket but its listing
    s3.forget()
    pipeline.prepare(config.data, progress=False)
    assert s3.gets("logs") == []


def test_a_filter_that_keeps_nothing_says_so(s3, tmp_path):
    done = towerkit(
        "train", str(_config(tmp_path)), "--set", "data.partitions={dt: [2027-01-01]}",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: s3://logs/events/: no Parquet object in the partitions asked for (dt in 2027-01-01)"
    ]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Runs and exports in a bucket
# --------------------------------------------------------------------------------------------


def test_a_run_in_the_bucket_is_read_by_recommend_evaluate_report_and_compare(
    s3, bucket_run, tmp_path
):
    url, _ = bucket_run
    done = towerkit("-q", "recommend", url, "--user", "7", "-k", "5")
    assert done.returncode == 0, done.stderr
    from towerkit.runs import RunDir

    assert len(re.findall(r"^│ [1-5] ", done.stdout, re.M)) == 5
    local = towerkit("-q", "recommend", str(RunDir(url).path), "--user", "7", "-k", "5")
    assert local.stdout == done.stdout  # the snapshot read is the run
    evaluated = towerkit("-q", "evaluate", url)
    assert evaluated.returncode == 0, evaluated.stderr
    hr = RunDir(url).metrics["test"]["hr@10"]
    assert f"{hr:.4f}" in evaluated.stdout
    page = tmp_path / "report.html"
    assert towerkit("-q", "report", url, "--out", str(page)).returncode == 0
    assert page.stat().st_size > 10_000
    compared = towerkit("-q", "compare", url, "popularity", "--resamples", "50")
    assert compared.returncode == 0, compared.stderr
    assert "test users, paired" in compared.stdout


def test_an_unpublished_prefix_is_not_a_run(s3):
    done = towerkit("recommend", "s3://runs/nothing-here", "--user", "7")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: s3://runs/nothing-here: no _manifest.json: not a finished run (nothing is "
        "there, or its upload is unfinished or under way)"
    ]


def test_a_new_run_needs_an_empty_prefix_and_clears_a_failed_attempts_leftovers(
    s3, bucket_run, tmp_path
):
    import fsspec

    done = towerkit("train", str(_config(tmp_path)), "--out", bucket_run[0])
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: s3://runs/a: holds a finished run already; a new run needs an empty prefix"
    )
    # what an attempt that failed before its first checkpoint left: removed, then the run
    fs = fsspec.filesystem("s3")
    fs.pipe("runs/leftover/config.yaml", b"model: {}\n")
    fs.pipe("runs/leftover/vocab/item.parquet", b"PAR1")
    trained = towerkit("-q", "train", str(_config(tmp_path)), "--out", "s3://runs/leftover")
    assert trained.returncode == 0, trained.stderr
    assert fs.cat_file("runs/leftover/vocab/item.parquet") != b"PAR1"


def test_an_upload_cut_off_leaves_no_manifest_and_resume_finishes_it(s3, tmp_path):
    from towerkit.runs import RunDir

    url = "s3://runs/cut"
    rule = Rule("PUT", r"^cut/model\.pt$", status=500, code="InternalError")
    s3.rules.append(rule)
    try:
        done = towerkit("-q", "train", str(_config(tmp_path)), "--out", url)
    finally:
        s3.rules.remove(rule)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {url}/model.pt: InternalError")
    assert f"finish its upload with: towerkit train --resume {url}" in lines[0]
    keys = _objects("runs/cut")
    assert "runs/cut/_manifest.json" not in keys and "runs/cut/checkpoint.pt" in keys
    assert json.loads(keys["runs/cut/run.json"])["status"] == "training"
    with pytest.raises(Exception, match=r"no _manifest\.json"):
        RunDir(url)
    resumed = towerkit("-q", "train", "--resume", url)
    assert resumed.returncode == 0, resumed.stderr
    run = RunDir(url)
    assert run.finished
    manifest = json.loads(_objects("runs/cut")["runs/cut/_manifest.json"])
    assert {"model.pt", "run.json", "metrics.json", "checkpoint.pt"} <= set(manifest["files"])
    assert towerkit("-q", "recommend", url, "--user", "3").returncode == 0


def test_a_run_stopped_after_an_epoch_resumes_from_the_buckets_checkpoint(
    s3, tmp_path, monkeypatch
):
    from towerkit import storage
    from towerkit.runs import RunDir

    save = RunDir.save_checkpoint

    def stop(run, state):  # Ctrl-C right after the first checkpoint (and its upload)
        save(run, state)
        raise KeyboardInterrupt

    url = "s3://runs/stopped"
    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "save_checkpoint", stop)
        done = towerkit("train", str(_config(tmp_path)), "--out", url)
    assert done.returncode == 130
    assert f"saved in {url}; resume with: towerkit train --resume {url}" in done.stderr
    again = towerkit("train", str(_config(tmp_path)), "--out", url)
    assert again.stderr.strip() == (
        f"error: {url}: holds an unfinished run; resume it with: towerkit train --resume {url} "
        "(or pick an empty prefix)"
    )
    # another machine: nothing local but the bucket
    storage.working_copy(url)  # (emptied)
    resumed = towerkit("-q", "train", "--resume", url)
    assert resumed.returncode == 0, resumed.stderr
    run = RunDir(url)
    assert run.finished and len(run.metrics["train"]["epochs"]) == 3


def test_export_to_the_bucket_then_serve_it_and_reload_a_newer_one(
    s3, bucket_run, tmp_path, monkeypatch
):
    from test_serve import Server

    url, _ = bucket_run
    export = "s3://runs/exports/current"
    done = towerkit("-q", "export", url, "--out", export)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(_objects("runs/exports/current")["runs/exports/current/_manifest.json"])
    assert "user_tower.onnx" in manifest["files"] and "manifest.json" in manifest["files"]
    with monkeypatch.context() as patch:  # the server's own cache (its environment only)
        patch.setenv("TOWERKIT_HOME", str(tmp_path / "serving-home"))
        server = Server(export, "--admin-token", "t0ken")
    try:
        first = server.post("/recommend", {"user": "7", "k": 5}).json()
        version = server.get("/readyz").json()["model_version"]
        # a newer model exported to the same prefix; the admin route's reload takes it
        other = tmp_path / "other.yaml"
        _config(tmp_path, "other.yaml")
        tree = yaml.safe_load(other.read_text())
        tree["train"]["seed"] = 7
        other.write_text(yaml.safe_dump(tree))
        assert towerkit("-q", "train", str(other), "--out", "s3://runs/b").returncode == 0
        assert towerkit("-q", "export", "s3://runs/b", "--out", export).returncode == 0
        reloaded = server.post(
            "/admin/reload", {}, headers={"Authorization": "Bearer t0ken"}, timeout=60
        )
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["source"] == export
        assert reloaded.json()["model_version"] != version
        second = server.post("/recommend", {"user": "7", "k": 5}).json()
        assert second["model_version"] != first["model_version"]
        # SIGHUP with nothing new published: the same snapshot, the same model
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert server.get("/readyz").json()["model_version"] == reloaded.json()["model_version"]
    finally:
        server.stop()
    snapshots = list((tmp_path / "serving-home" / "remote").glob("*/*"))
    assert len(snapshots) == 2  # the first export and the newer one, each checked


def test_a_study_in_the_bucket_publishes_each_trial_as_a_run(s3, tmp_path):
    from towerkit.runs import RunDir

    space = tmp_path / "space.yaml"
    space.write_text(  # no pruner: both trials finish (trial 0, the base config, leads)
        "params:\n  train.lr: {low: 0.001, high: 0.03, log: true}\nbudget: {pruner: none}\n"
    )
    config = _config(tmp_path)
    done = towerkit(
        "-q", "tune", str(config), "--space", str(space), "--trials", "2", "--set",
        "train.epochs=1", "--out", "s3://runs/study",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    keys = set(_objects("runs/study"))
    assert {"runs/study/_manifest.json", "runs/study/best.yaml", "runs/study/study.html"} <= keys
    for trial in ("0000", "0001"):
        assert f"runs/study/trials/{trial}/_manifest.json" in keys
        assert RunDir(f"s3://runs/study/trials/{trial}").finished
    manifest = json.loads(_objects("runs/study")["runs/study/_manifest.json"])
    assert "trials/0001/model.pt" in manifest["files"]


def test_credentials_are_written_nowhere(s3, bucket_run, tmp_path):
    _, done = bucket_run
    from towerkit.files import towerkit_home

    assert SECRET_KEY not in done.stdout + done.stderr
    for key, body in _objects("runs").items():
        assert SECRET_KEY.encode() not in body, key
        assert s3server.ACCESS_KEY.encode() not in body, key
    for path in towerkit_home().rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------------------------
# Failures: one line naming the bucket, the key and the reason
# --------------------------------------------------------------------------------------------


def test_a_missing_bucket_or_key_is_one_line(s3, tmp_path):
    for path, reason in (
        ("s3://no-such-bucket/events/", "no such bucket"),
        ("s3://logs/no/such/log.parquet", "no such key"),
    ):
        done = towerkit("train", str(_config(tmp_path)), "--set", f"data.path={path}",
                        "--out", str(tmp_path / "run"))  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [f"error: {path}: {reason}"]
        assert not (tmp_path / "run").exists()


def test_access_denied_is_one_line(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("TOWERKIT_HOME", str(tmp_path / "home"))
    rule = Rule("GET", r"^events/dt=2026-12-02/part-1\.parquet$", status=403, code="AccessDenied")
    s3.rules.append(rule)
    try:
        done = towerkit("-q", "train", str(_config(tmp_path)), "--out", str(tmp_path / "run"))
    finally:
        s3.rules.remove(rule)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: s3://logs/events/dt=2026-12-02/part-1.parquet: access denied"
    ]


def test_a_throttled_read_is_retried_then_a_lasting_one_is_one_line(s3, tmp_path, monkeypatch):
    from towerkit import storage

    monkeypatch.setenv("TOWERKIT_HOME", str(tmp_path / "home"))
    key = r"^events/dt=2026-12-01/part-0\.parquet$"
    once = Rule("GET", key, status=503, code="SlowDown", times=1)
    s3.rules.append(once)
    s3.forget()
    try:
        fetched = storage.fetch("s3://logs/events/dt=2026-12-01/part-0.parquet")
    finally:
        s3.rules.remove(once)
    assert once.used == 1 and s3.count("GET", key) == 2  # refused once, then read
    assert fetched.path.stat().st_size == fetched.objects[0].size
    monkeypatch.setenv("TOWERKIT_HOME", str(tmp_path / "home2"))
    always = Rule("GET", key, status=503, code="SlowDown")
    s3.rules.append(always)
    try:
        with pytest.raises(storage.StorageError) as caught:
            storage.fetch("s3://logs/events/dt=2026-12-01/part-0.parquet")
    finally:
        s3.rules.remove(always)
    assert str(caught.value) == (
        "s3://logs/events/dt=2026-12-01/part-0.parquet: throttled (SlowDown), and still after "
        "the retries with backoff"
    )


def test_a_connection_dropped_mid_read_is_retried_then_one_line(s3, tmp_path, monkeypatch):
    from towerkit import storage

    monkeypatch.setenv("TOWERKIT_HOME", str(tmp_path / "home"))
    url = "s3://logs/events/dt=2026-12-03/part-1.parquet"
    key = r"^events/dt=2026-12-03/part-1\.parquet$"
    s3.rules.append(dropped := Rule("GET", key, status=None))
    try:
        with pytest.raises(storage.StorageError) as caught:
            storage.fetch(url)
    finally:
        s3.rules.remove(dropped)
    assert dropped.used >= 2  # retried before it gave up
    message = str(caught.value)
    assert message.startswith(f"{url}: network failure (") and "\n" not in message
    assert not list((tmp_path / "home" / "objects").rglob("*.parquet"))  # nothing half-kept


def test_the_server_stopped_mid_write_is_one_line_and_leaves_no_manifest(tmp_path):
    """A server of its own, stopped as the first checkpoint is uploaded; `towerkit train` in a
    process of its own says one line."""
    server = s3server.start()
    try:
        env = {**os.environ, **server.env(), "TOWERKIT_HOME": str(tmp_path / "home")}
        import boto3

        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="y")  # fmt: skip
        client.create_bucket(Bucket="logs")
        client.create_bucket(Bucket="runs")
        frame = _log().drop(columns="dt")
        local = tmp_path / "log.parquet"
        frame.to_parquet(local, index=False)
        client.upload_file(str(local), "logs", "log.parquet")
        config = _config(tmp_path, path="s3://logs/log.parquet")
        server.rules.append(Rule("PUT", r"checkpoint\.pt$", action=server.moto.stop))
        done = towerkit("-q", "train", str(config), "--out", "s3://runs/x", env=env, process=True)
    finally:
        server.proxy.shutdown()
        server.proxy.server_close()
        with contextlib.suppress(Exception):  # (stopped by the rule)
            server.moto.stop()
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: s3://runs/x/checkpoint.pt: network failure (")
    assert SECRET_KEY not in done.stderr


# --------------------------------------------------------------------------------------------
# The parts, without a server
# --------------------------------------------------------------------------------------------


def test_the_partition_filter_compares_numbers_as_numbers_and_text_as_text():
    from towerkit.data.partitions import partition_filter, partition_values

    assert partition_values("dt=2026-12-01/hour=9/part-0.parquet") == {
        "dt": "2026-12-01",
        "hour": "9",
    }
    keep = partition_filter({"hour": {"min": "9", "max": "10"}})
    assert [keep(f"hour={h}/p.parquet") for h in (8, 9, 10, 11)] == [False, True, True, False]
    days = partition_filter({"dt": {"min": "2026-12-02"}, "region": {"in": ["eu"]}})
    assert days("dt=2026-12-02/region=eu/p.parquet")
    assert not days("dt=2026-12-01/region=eu/p.parquet")
    assert not days("dt=2026-12-03/region=us/p.parquet")
    assert not days("dt=2026-12-03/p.parquet")  # a shard without the column is not asked for
    assert partition_filter(None) is None and partition_filter({}) is None


def test_the_config_takes_urls_as_given_and_partition_values_as_text(tmp_path):
    from towerkit.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  path: s3://logs/events/\n  partitions:\n    dt: [2026-12-01, 2026-12-02]\n"
        "    hour: {min: 9, max: 17}\n  items: {path: 'gs://side/items.parquet', key: item}\n"
    )
    data = load_config(path).data
    assert data.path == "s3://logs/events/" and data.items.path == "gs://side/items.parquet"
    assert data.partition_spec() == {
        "dt": {"in": ["2026-12-01", "2026-12-02"]},
        "hour": {"min": "9", "max": "17"},
    }
    local = load_config(path, ["data.path=events", "data.items=null"]).data
    assert local.path == Path("events").absolute()
    with pytest.raises(ConfigError, match="partitions describe a log given by path"):
        load_config(path, ["data.path=null", "data.items=null", "data.dataset=ml-100k"])


def test_partitions_of_a_local_directory_read_the_same_in_memory_and_out_of_core(tmp_path):
    from towerkit.config import load_config
    from towerkit.runs import pipeline

    frame = _log()
    for day, rows in frame.groupby("dt"):
        (tmp_path / "events" / f"dt={day}").mkdir(parents=True)
        rows.drop(columns="dt").to_parquet(tmp_path / "events" / f"dt={day}" / "p.parquet")
    config = tmp_path / "c.yaml"
    data = {"path": "events", "partitions": {"dt": {"max": "2026-12-02"}}}
    config.write_text(yaml.safe_dump({"data": data}))
    streamed = pipeline.prepare(load_config(config).data, progress=False)
    in_memory = pipeline.prepare(
        load_config(config, ["data.min_user_interactions=1"]).data, progress=False
    )
    assert len(streamed.encoded) == int((frame["dt"] <= "2026-12-02").sum())
    assert streamed.fingerprint == in_memory.fingerprint
    assert streamed.objects == ()
    single = load_config(
        config, [f"data.path={tmp_path / 'events' / 'dt=2026-12-01' / 'p.parquet'}"]
    )
    with pytest.raises(Exception, match="filters the shards of a directory, not a file"):
        pipeline.prepare(single.data, progress=False)


def test_the_stores_failures_read_as_a_few_words():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from towerkit.storage import describe, failures

    def client_error(code: str, status: int) -> ClientError:
        response = {"Error": {"Code": code, "Message": f"{code} says no"},
                    "ResponseMetadata": {"HTTPStatusCode": status}}  # fmt: skip
        return ClientError(response, "GetObject")

    assert describe(client_error("NoSuchBucket", 404)) == "no such bucket"
    assert describe(client_error("AccessDenied", 403)) == "access denied"
    assert describe(client_error("SlowDown", 503)).startswith("throttled (SlowDown)")
    assert describe(client_error("InvalidAccessKeyId", 403)) == (
        "the credentials were refused (InvalidAccessKeyId)"
    )
    assert describe(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/x?X-Amz-Signature=s")
    ) == ('network failure (Could not connect to the endpoint URL: "http://127.0.0.1:9/x")')
    wrapped = FileNotFoundError("The specified bucket does not exist")
    wrapped.__cause__ = client_error("NoSuchBucket", 404)
    assert describe(wrapped) == "no such bucket"
    assert describe(ValueError("a bug")) is None and describe(KeyboardInterrupt()) is None
    with pytest.raises(Exception) as caught, failures("s3://user:pw@b/k?sig=1"):
        raise client_error("AccessDenied", 403)
    assert str(caught.value) == "s3://b/k: access denied"
    with pytest.raises(ValueError, match="a bug"), failures("s3://b/k"):
        raise ValueError("a bug")
