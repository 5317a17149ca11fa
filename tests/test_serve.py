"""Export and serving: ONNX parity for every model, the real server (uvicorn in a subprocess on a
free loopback port) answering as `towerkit recommend` does, bad requests as 4xx (and fuzzed),
hot reload under load, and the page in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from conftest import (
    CHROMIUM,
    free_port,
    launch_chromium,
    prepare_log,
    small_config,
    towerkit,
    walk_log,
)
from towerkit.retrieval import Retriever
from towerkit.retrieval.export import ExportDir, ExportError, export_run, parity
from towerkit.retrieval.towers import OnnxTower, TorchTower
from towerkit.runs import RunDir, pipeline

TOKEN = "test-token"
MODELS = {
    "youtube_dnn": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32], "recent_items": 2},
    "dssm": {"name": "dssm", "embedding_dim": 16, "id_dim": 16, "hidden": [32]},
    "sasrec": {"name": "sasrec", "embedding_dim": 16, "n_heads": 2},
    "sasrec-filter": {"name": "sasrec", "embedding_dim": 16, "filter_mix": 0.5},
    "gru4rec": {"name": "gru4rec", "embedding_dim": 16, "hidden_size": 24},
    "hstu": {"name": "hstu", "embedding_dim": 16, "n_heads": 2},
    "comirec_sa": {"name": "comirec_sa", "embedding_dim": 16, "interests": 3},
    "comirec_dr": {"name": "comirec_dr", "embedding_dim": 16, "interests": 3},
    "mind": {"name": "mind", "embedding_dim": 16, "interests": 3},
}


@pytest.fixture(scope="module")
def prepared():
    """1,100 users of 6-20 interactions over 80 items, with user side features."""
    lengths = np.random.default_rng(7).integers(6, 21, 1100)
    log = walk_log(lengths, 80, seed=7)
    return prepare_log(log, user_features=["gender", "age", "occupation"])


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-runs")
    out = {}
    for name, model in MODELS.items():
        config = small_config(model=model, train={"epochs": 2, "batch_size": 256})
        out[name] = pipeline.train(config, prepared, run=root / name).run.path
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_pytorch_within_1e5_on_1000_users(runs, tmp_path, name):
    out = export_run(runs[name], tmp_path / "export")
    export = ExportDir(out)
    assert export.manifest["model"] == MODELS[name]["name"]
    assert export.manifest["onnx"]["parity"] <= 1e-5
    run = RunDir(runs[name])
    users = np.arange(1, 1001)
    tower = OnnxTower(out / "user_tower.onnx", run.user_features)
    assert parity(run, TorchTower(run.load_model()), tower, users) <= 1e-5
    # The same recommendations from the export (onnxruntime) as from the run (PyTorch).
    raw = run.user_vocab.raw[:50]
    ours, theirs = export.retriever().recommend(raw, 10), Retriever.from_run(run).recommend(raw, 10)
    assert (ours.items == theirs.items).mean() > 0.99  # near-ties may swap
    expected = {"user_tower.onnx", "items.parquet", "users.parquet", "manifest.json"}
    assert expected <= {p.name for p in out.iterdir()} and (out / "index" / "index.json").exists()


def test_a_changed_export_is_refused(runs, tmp_path):
    out = export_run(runs["sasrec"], tmp_path / "export", index="faiss-hnsw")
    assert ExportDir(out).manifest["index"]["kind"] == "faiss-hnsw"
    (out / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(ExportError, match=r"items\.parquet does not match its sha256"):
        ExportDir(out)
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_run(runs["sasrec"], out)
    with pytest.raises(ExportError, match="not an export directory"):
        ExportDir(tmp_path)


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_a_quantized_tower_has_fewer_bits_is_measured_and_recommends_alike(runs, tmp_path, kind):
    plain = ExportDir(export_run(runs["sasrec"], tmp_path / "fp32"))
    done = towerkit("export", str(runs["sasrec"]), "--out", str(tmp_path / kind),
                    "--quantize", kind)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"user tower {kind}:" in done.stdout and "top-10 agreement with fp32" in done.stdout
    export = ExportDir(tmp_path / kind)
    shrunk = export.manifest["onnx"]["quantized"]
    size = (tmp_path / kind / "user_tower.onnx").stat().st_size
    assert shrunk["bytes"] == size
    assert shrunk["fp32_bytes"] == (tmp_path / "fp32" / "user_tower.onnx").stat().st_size
    # The largest table is stored in 8 or 16 bits (sizes shrink on real catalogues, not here:
    # this tower's tables are too small to outweigh the scales int8 adds).
    import onnx

    tables = onnx.load(tmp_path / kind / "user_tower.onnx").graph.initializer
    largest = max(tables, key=lambda t: np.prod(t.dims))
    bits = {"int8": {onnx.TensorProto.INT8, onnx.TensorProto.UINT8},
            "fp16": {onnx.TensorProto.FLOAT16}}  # fmt: skip
    assert largest.data_type in bits[kind]
    # Measured, not assumed: a quantized tower differs, a little.
    assert 0 < shrunk["parity"] < {"int8": 0.1, "fp16": 0.01}[kind]
    assert shrunk["agreement@10"] >= 0.8
    assert export.manifest["onnx"]["parity"] <= 1e-5  # the fp32 tower it came from
    # Histories go through the quantized tower; known users keep their stored fp32 vectors.
    run = RunDir(runs["sasrec"])
    histories = [[int(i) for i in run.item_vocab.raw[[3, 9, 4, 7]]], [int(run.item_vocab.raw[1])]]
    ours, theirs = (e.retriever().recommend_history(histories, 10) for e in (export, plain))
    shared = [len(set(a) & set(b)) / 10 for a, b in zip(ours.items, theirs.items, strict=True)]
    assert np.mean(shared) >= 0.7
    users = run.user_vocab.raw[:20]
    np.testing.assert_array_equal(
        export.retriever().recommend(users, 10).items, plain.retriever().recommend(users, 10).items
    )
    # The server's load probe takes it (within four times its measured difference) and still
    # refuses a tower that is not this model's.
    from towerkit.serve.loading import load_served, probe_tolerance

    assert probe_tolerance(export.manifest) == pytest.approx(max(1e-4, 4 * shrunk["parity"]))
    load_served(tmp_path / kind, threads=1).close()


def test_an_unknown_quantization_is_one_line_and_writes_nothing(runs, tmp_path):
    done = towerkit("export", str(runs["sasrec"]), "--out", str(tmp_path / "q"),
                    "--quantize", "int4")  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip() == "error: quantize 'int4': use one of int8, fp16"
    assert not (tmp_path / "q").exists()


# --------------------------------------------------------------------------------------------
# The real server
# --------------------------------------------------------------------------------------------


class Server:
    """`towerkit serve` in a subprocess on a free loopback port."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "towerkit.cli", "-q", "serve", str(directory),
             "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server ended: {self.process.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError("the server did not become ready")

    def post(self, path: str, body, *, timeout: float = 30, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=timeout, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def under_load(url: str, bodies: list[dict], clients: int = 4, seconds: float = 120):
    """``clients`` threads posting to ``url``'s /recommend (client ``i`` sends
    ``bodies[i % len(bodies)]``) until the block ends, or ``seconds`` have passed. Yields what
    they saw: ``failures`` (the text of every answer that was not 200), ``sent`` and
    ``slowest`` (seconds)."""
    seen = SimpleNamespace(failures=[], sent=0, slowest=0.0)
    done = threading.Event()

    def client(worker: int) -> None:
        deadline = time.monotonic() + seconds
        with httpx.Client(timeout=30) as http:
            while not done.is_set() and time.monotonic() < deadline:
                start = time.perf_counter()
                response = http.post(f"{url}/recommend", json=bodies[worker % len(bodies)])
                seen.slowest = max(seen.slowest, time.perf_counter() - start)
                seen.sent += 1
                if response.status_code != 200:
                    seen.failures.append(response.text)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        done.set()
        for thread in threads:
            thread.join()


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    export = export_run(runs["youtube_dnn"], tmp_path_factory.mktemp("exp") / "youtube_dnn")
    running = Server(export, "--admin-token", TOKEN)
    yield running
    running.stop()


def test_served_top10_is_what_towerkit_recommend_gives(server, runs):
    run = RunDir(runs["youtube_dnn"])
    retriever = Retriever.from_run(run)
    for user in run.user_vocab.raw[[0, 17, 400]]:
        served = server.post("/recommend", {"user": int(user), "k": 10}).json()
        expected = retriever.recommend([user], 10)
        assert [i["id"] for i in served["items"]] == list(expected.items[0])
        np.testing.assert_allclose([i["score"] for i in served["items"]], expected.scores[0],
                                   atol=1e-5)  # fmt: skip
        cli = subprocess.run(
            [sys.executable, "-m", "towerkit.cli", "recommend", str(runs["youtube_dnn"]),
             "--user", str(user), "-k", "10"], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [[c.strip() for c in line.split("│")[1:-1]] for line in cli.splitlines()]
        shown = [cells[1] for cells in rows if cells and cells[0].isdigit()]
        assert shown == [str(i["id"]) for i in served["items"]]  # the same ten, in order
    history = [int(i) for i in run.item_vocab.raw[[3, 9, 4]]]
    served = server.post("/recommend", {"history": history, "features": {"gender": "F"}}).json()
    expected = retriever.recommend_history([history], 10, features=[{"gender": "F"}])
    assert [i["id"] for i in served["items"]] == list(expected.items[0])
    assert served["model_version"] == ExportDir(server.directory).version
    assert not served["history_truncated"]
    # One item, fewer than the tower's recent_items (2): padded, not a 500.
    served = server.post("/recommend", {"history": history[:1]})
    assert served.status_code == 200, served.text
    expected = retriever.recommend_history([history[:1]], 10)
    assert [i["id"] for i in served.json()["items"]] == list(expected.items[0])


def test_batch_similar_items_history_health(server, runs):
    run = RunDir(runs["youtube_dnn"])
    users = [int(u) for u in run.user_vocab.raw[:5]]
    one_by_one = [server.post("/recommend", {"user": u, "k": 5}).json()["items"] for u in users]
    batch = server.post("/recommend/batch", {"queries": [{"user": u, "k": 5} for u in users]})
    results = [r["items"] for r in batch.json()["results"]]
    assert [[i["id"] for i in r] for r in results] == [[i["id"] for i in r] for r in one_by_one]
    np.testing.assert_allclose(  # a batch scores in one product: the last bits may differ
        [[i["score"] for i in r] for r in results],
        [[i["score"] for i in r] for r in one_by_one],
        atol=1e-6,
    )
    item = int(run.item_vocab.raw[0])
    similar = server.post("/similar", {"item": item, "k": 5}).json()["items"]
    assert len(similar) == 5 and item not in [i["id"] for i in similar]
    found = server.get("/items?q=film%20[1]&limit=3").json()
    assert found and all("film [1" in i["title"].lower() for i in found)
    history = server.get(f"/users/{users[0]}/history?n=3").json()
    assert history["length"] >= 3 and len(history["items"]) == 3
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz").json()
    assert ready["ready"] and ready["items"] == 80
    metrics = server.get("/metrics").text
    assert 'towerkit_requests_total{endpoint="/recommend",status="200"}' in metrics
    assert 'towerkit_request_seconds_bucket{endpoint="/users/{user}/history"' in metrics
    assert "towerkit_model_info{" in metrics and 'index="exact"' in metrics
    assert "/openapi.json" in server.get("/docs").text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"user": 987654}, 404, "unknown user id(s) 987654"),
        ({"history": [1, 424242]}, 422, "history: unknown item id(s) 424242"),
        ({"user": 1, "exclude": [424242]}, 422, "exclude: unknown item id(s) 424242"),
        ({"user": 1, "k": 0}, 422, "k must lie in [1, 80], got 0"),
        ({"user": 1, "k": 81}, 422, "k must lie in [1, 80], got 81"),
        ({"history": []}, 422, "history is empty"),
        ({"user": 1, "history": [1]}, 422, "give either user or history"),
        ({}, 422, "give either user or history"),
        ({"user": 1, "features": {"gender": "F"}}, 422, "features describe the user of a history"),
        ({"history": [1], "features": {"height": 3}}, 422, "unknown user feature(s) height"),
        ({"history": [1], "features": {"gender": "Q"}}, 422, "unknown value 'Q'"),
        ({"user": 1, "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({"user": 1, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"user": 1, "a\nb": 1}, 422, "'a\\nb': Extra inputs are not permitted"),  # one line
        ({"user": [1, 2]}, 422, "user"),
        ({"user": True}, 422, "user"),  # JSON's true is not user 1
        ({"user": 1, "k": True}, 422, "k: Input should be a valid integer"),
        ({"history": [1, False]}, 422, "history"),
        ({"user": 1, "filter": "not " * 900 + "count > 1"}, 422, "levels deep; at most 100"),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem(server, body, status, message):
    response = server.post("/recommend", body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_malformed_and_oversized_bodies(server, runs):
    bad = httpx.post(f"{server.url}/recommend", content=b"{not json",
                     headers={"content-type": "application/json"})  # fmt: skip
    assert bad.status_code == 422 and "not valid JSON" in bad.json()["detail"]
    huge = server.post("/recommend", {"history": [1] * 600_000})  # 1.8 MB of JSON
    assert huge.status_code == 413 and "at most" in huge.json()["detail"]
    # Longer than max_len (10): the last 10 are read, and the response says so.
    run = RunDir(runs["youtube_dnn"])
    long = [int(i) for i in run.item_vocab.raw[:30]]
    answer = server.post("/recommend", {"history": long, "k": 5}).json()
    assert answer["history_truncated"] is True
    tail = server.post("/recommend", {"history": long[-10:], "exclude": long[:-10], "k": 5})
    assert [i["id"] for i in answer["items"]] == [i["id"] for i in tail.json()["items"]]


def test_a_body_sent_in_chunks_is_limited_too(server):
    """No content-length to refuse it by: the body is cut off once it passes the limit."""
    chunks = (b'{"history": [' + b"1," * 100_000 for _ in range(8))  # 1.6 MB, chunked
    huge = httpx.post(f"{server.url}/recommend", content=chunks)
    assert huge.status_code == 413 and "at most 1048576 bytes" in huge.json()["detail"]
    assert 'endpoint="(too large)",status="413"' in server.get("/metrics").text


def test_the_hot_path_answers_as_the_documented_route(server, runs, monkeypatch):
    """POST /recommend, /recommend/batch and /similar are answered before FastAPI's stack
    (towerkit.serve.app.Towerkit); through FastAPI's routes, every answer is the same."""
    from fastapi import FastAPI
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    from towerkit.serve.app import Towerkit, create_app

    routed = []  # the requests FastAPI's router handed to a route
    handle = APIRoute.handle

    async def counted(self, scope, receive, send):
        routed.append(self.path)
        await handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)

    run = RunDir(runs["youtube_dnn"])
    user, item = int(run.user_vocab.raw[0]), int(run.item_vocab.raw[0])
    requests = [
        ("/recommend", {"user": user, "k": 3}),
        ("/recommend", {"history": [item], "k": 2, "filter": "count > 1"}),
        ("/recommend", {"user": 987654}),
        ("/recommend", {"user": user, "k": "ten", "colour": 1}),
        ("/recommend", "{not json"),
        ("/recommend", {"user": user, "filter": "count >"}),
        ("/recommend/batch", {"queries": [{"user": user}, {"history": [item], "k": 1}]}),
        ("/recommend/batch", {"queries": [{"user": user}, {"history": [424242]}]}),
        ("/similar", {"item": item, "k": 4}),
        ("/similar", {"item": 424242}),
    ]

    def answers() -> list:
        with TestClient(create_app(server.directory)) as client:
            out = []
            for path, body in requests:
                text = body if isinstance(body, str) else json.dumps(body)
                response = client.post(path, content=text)
                out.append((response.status_code, response.headers["content-type"],
                            response.json()))  # fmt: skip
            metrics = client.get("/metrics").text
            assert 'towerkit_requests_total{endpoint="/recommend",status="404"} 1.0' in metrics
            assert 'towerkit_requests_total{endpoint="/similar",status="200"} 1.0' in metrics
        return out

    hot = answers()
    assert [status for status, _, _ in hot] == [200, 200, 404, 422, 422, 422, 200, 422, 200, 404]
    assert routed == ["/metrics"]
    monkeypatch.setattr(Towerkit, "__call__", FastAPI.__call__)  # FastAPI's routes
    assert answers() == hot
    assert len(routed) == 1 + len(requests) + 1


@pytest.mark.parametrize(
    "header", [b"Bearer t\xe9st", b"Bearer \xff\xfe", b"Basic dG9rZW4=", b"", b"Bearer"]
)
def test_a_malformed_authorization_is_401(server, header):
    """Any header that is not the token, non-ASCII bytes included, is refused as such."""
    refused = httpx.post(
        f"{server.url}/admin/reload", json={"path": "x"}, headers={"authorization": header}
    )
    assert refused.status_code == 401, refused.text
    assert "Authorization: Bearer TOKEN" in refused.json()["detail"]


def test_hot_reload_swaps_models_without_failing_a_request(server, runs, tmp_path):
    other = export_run(runs["sasrec"], tmp_path / "sasrec")
    first = server.get("/readyz").json()["model_version"]
    assert server.post("/admin/reload", {"path": str(other)}).status_code == 401
    bearer = {"authorization": f"Bearer {TOKEN}"}
    with under_load(server.url, [{"user": 1}]) as load:
        versions = []
        for target in [other, server.directory, other]:
            swap = server.post("/admin/reload", {"path": str(target)}, headers=bearer)
            assert swap.status_code == 200, swap.text
            versions.append(swap.json()["model_version"])
        # A run directory: exported by a child process (`towerkit export`, niced, on one
        # thread: minutes on a machine busy with other tests), then loaded.
        swap = server.post(
            "/admin/reload", {"path": str(runs["sasrec"])}, headers=bearer, timeout=300
        )
        assert swap.status_code == 200 and swap.json()["model_version"] == versions[0]
        unfinished = tmp_path / "unfinished"
        shutil.copytree(runs["sasrec"], unfinished)
        status = json.loads((unfinished / "run.json").read_text())
        (unfinished / "run.json").write_text(json.dumps({**status, "status": "training"}))
        refused = server.post("/admin/reload", {"path": str(unfinished)}, headers=bearer)
        assert refused.status_code == 422 and "the run is unfinished" in refused.text
        broken = tmp_path / "broken"
        shutil.copytree(other, broken)
        (broken / "user_tower.onnx").write_bytes(b"garbage")
        refused = server.post("/admin/reload", {"path": str(broken)}, headers=bearer)
        assert refused.status_code == 422 and "still serving the old model" in refused.text
    assert not load.failures
    assert versions[1] == first != versions[0] == versions[2]
    assert server.get("/readyz").json()["model_version"] == versions[2]  # the broken one refused
    server.process.send_signal(signal.SIGHUP)  # reloads the directory served now
    deadline = time.monotonic() + 30
    while 'towerkit_reloads_total{outcome="done"} 5.0' not in server.get("/metrics").text:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.2)


def test_admin_endpoint_is_off_without_a_token(runs, tmp_path):
    export = export_run(runs["gru4rec"], tmp_path / "gru")
    plain = Server(export)
    try:
        assert plain.post("/admin/reload", {"path": str(export)}).status_code == 404
        assert plain.post("/recommend", {"user": 1}).status_code == 200
    finally:
        plain.stop()


def test_the_served_model_is_kept_out_of_the_garbage_collector(runs, tmp_path, monkeypatch):
    """A full collection traversing the loaded model paused requests for 100+ ms (the p99 of
    the load benchmark): the model is frozen at load, a reloaded one at its swap, and a
    replaced one is closed without a collection (after 10 reloads, a full collection on the
    event loop stalled every request ~0.7 s)."""
    import asyncio
    import gc

    from towerkit.serve import state
    from towerkit.serve.app import create_app
    from towerkit.serve.loading import load_served

    def tracked(obj) -> bool:
        return any(o is obj for o in gc.get_objects())

    try:
        app = create_app(export_run(runs["youtube_dnn"], tmp_path / "yt"))
        assert gc.get_freeze_count() > 0 and not tracked(app.state.served)
        old = app.state.served
        other = export_run(runs["dssm"], tmp_path / "dssm")

        def no_collection(*args):
            raise AssertionError("a full collection while serving")

        monkeypatch.setattr(gc, "collect", no_collection)

        async def reload():
            new = await app.state.server.reload(str(other))
            assert app.state.served is new and not tracked(new)  # frozen at the swap
            state.retire(old)

        asyncio.run(reload())
        assert gc.get_freeze_count() > 0 and old.retriever.index.ids is not None
        run_served = load_served(runs["dssm"])  # a run: exported to a temporary directory
        assert run_served._tmp.exists()
        state.retire(run_served)
        assert not run_served._tmp.exists()  # closed: its export removed
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_ten_reloads_under_load_fail_no_request_and_stall_none(server, runs, tmp_path):
    """Four clients send known-user and history requests while the model is reloaded 10
    times, alternating between two models: no request fails, and none takes 250 ms as the
    server's own latency histogram sees it. The clients' clocks, which a loaded machine
    (another test training beside this one) slows too, get a generous bound: a request that
    waited on a reload's loading would take seconds."""
    other = export_run(runs["sasrec"], tmp_path / "sasrec")
    bearer = {"authorization": f"Bearer {TOKEN}"}
    run = RunDir(runs["youtube_dnn"])
    history = [int(i) for i in run.item_vocab.raw[[3, 9, 4, 7]]]
    bodies = [{"user": int(run.user_vocab.raw[0])}, {"history": history, "k": 5}]
    before = _latencies(server)
    with under_load(server.url, bodies) as load:
        versions = []
        for attempt in range(10):
            target = other if attempt % 2 == 0 else server.directory
            swap = server.post("/admin/reload", {"path": str(target)}, headers=bearer)
            assert swap.status_code == 200, swap.text
            versions.append(swap.json()["model_version"])
    assert not load.failures and load.sent > 100
    assert len(set(versions)) == 2 and versions[-1] == ExportDir(server.directory).version
    assert load.slowest < 2.5, f"a request took {load.slowest * 1e3:.0f} ms"
    after = _latencies(server)
    count, within = (after[b] - before[b] for b in ("+Inf", "0.25"))
    assert count >= load.sent - 4 and within == count  # the server's view: every one under 250 ms


def _latencies(server: Server) -> dict[str, float]:
    """The server's /recommend latency histogram: cumulative counts by bucket bound."""
    out = {}
    for line in server.get("/metrics").text.splitlines():
        if line.startswith('towerkit_request_seconds_bucket{endpoint="/recommend",'):
            bound = line.split('le="')[1].split('"')[0]
            out[bound] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_mismatched_export_is_refused_and_the_old_model_serves_on(server, runs, tmp_path):
    """An export whose ONNX tower is another model's, its checksum rewritten so that every
    file matches the manifest: loading it gave 200, then every history request a 500. The
    probe before the swap finds the tower's query vectors far from the stored ones."""
    from towerkit.serve.loading import load_served

    mismatched = tmp_path / "mismatched"
    shutil.copytree(server.directory, mismatched)
    other = export_run(runs["sasrec"], tmp_path / "sasrec")  # the same width (16), same inputs
    shutil.copy(other / "user_tower.onnx", mismatched / "user_tower.onnx")
    manifest = json.loads((mismatched / "manifest.json").read_text())
    manifest["files"]["user_tower.onnx"] = ExportDir(other).manifest["files"]["user_tower.onnx"]
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    ExportDir(mismatched)  # the checksums agree: only a query can tell
    with pytest.raises(ExportError, match="the user tower does not match the export's user"):
        load_served(mismatched)
    first = server.get("/readyz").json()["model_version"]
    bearer = {"authorization": f"Bearer {TOKEN}"}
    refused = server.post("/admin/reload", {"path": str(mismatched)}, headers=bearer)
    assert refused.status_code == 422, refused.text
    assert "still serving the old model" in refused.text and "does not match" in refused.text
    assert server.get("/readyz").json()["model_version"] == first
    run = RunDir(runs["youtube_dnn"])
    history = [int(i) for i in run.item_vocab.raw[[3, 9, 4]]]
    answer = server.post("/recommend", {"history": history, "k": 5})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 5
    # A tower that cannot answer at all (another model's inputs) is refused the same way.
    (mismatched / "user_tower.onnx").write_bytes((other / "user_tower.onnx").read_bytes()[:-64])
    manifest["files"]["user_tower.onnx"] = _sha256(mismatched / "user_tower.onnx")
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    refused = server.post("/admin/reload", {"path": str(mismatched)}, headers=bearer)
    assert refused.status_code == 422 and server.get("/readyz").json()["model_version"] == first


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_server_sizes_its_threads_before_torch_loads():
    """`configure` runs before torch: the pools get every core but one (or --threads), the
    OpenMP idle threads sleep unless the user chose otherwise, and torch reads both."""
    import os

    from towerkit.serve.threads import available_cores, default_threads

    # As `towerkit serve` does: configure, then the app (torch loaded) configures again.
    code = ("import os; from towerkit.serve.threads import configure; t = configure({0}); "
            "import torch; configure({0}); print(t.compute, os.environ['OMP_WAIT_POLICY'], "
            "os.environ['OMP_NUM_THREADS'], torch.get_num_threads(), t.passive)")  # fmt: skip

    def run(threads, **env):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
        done = subprocess.run([sys.executable, "-c", code.format(threads)], env={**clean, **env},
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run(3) == ["3", "PASSIVE", "3", "3", "True"]
    expected = str(default_threads(available_cores()))
    assert run(None) == [expected, "PASSIVE", expected, expected, "True"]
    assert run(2, OMP_WAIT_POLICY="ACTIVE") == ["2", "ACTIVE", "2", "2", "False"]
    assert default_threads(1) == 1 and default_threads(16) == 15
    with pytest.raises(ValueError, match="at least 1"):
        from towerkit.serve.threads import configure

        configure(0)


def test_the_batcher_waits_for_nothing_and_batches_what_arrives_meanwhile():
    """A lone job runs at once (no window to wait out); jobs of the same turn of the loop go
    as one batch; jobs that arrive while a batch runs go together as the next; a batch that
    ``inline`` calls cheap runs on the event loop's thread, the others in the worker."""
    import asyncio

    from towerkit.serve.batching import MicroBatcher

    batches, threads, release = [], [], threading.Event()

    def run(jobs):
        batches.append(list(jobs))
        threads.append(threading.current_thread() is threading.main_thread())
        if "slow" in jobs:
            release.wait(10)
        return [job if job == "slow" else 2 * job for job in jobs]

    async def main() -> float:
        batcher = MicroBatcher(run, inline=lambda jobs: jobs == [7])
        start = time.perf_counter()
        assert await batcher.submit(1) == 2
        lone = time.perf_counter() - start
        assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 2, 4]
        slow = asyncio.ensure_future(batcher.submit("slow"))
        await asyncio.sleep(0.05)  # the slow batch holds the worker
        later = [asyncio.ensure_future(batcher.submit(i)) for i in (10, 11)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in later)  # waiting for the worker, not for a timer
        release.set()
        assert await slow == "slow" and [await f for f in later] == [20, 22]
        assert await batcher.submit(7) == 14  # cheap: on the loop
        batcher.close()
        return lone

    lone = asyncio.run(main())
    assert batches == [[1], [0, 1, 2], ["slow"], [10, 11], [7]]
    assert threads == [False, False, False, False, True]
    assert lone < 0.5  # no batch window (generous for a loaded machine; the batches show it)


def test_autocomplete_puts_exact_titles_first():
    """Exact matches (case aside), then titles starting with the text, then the rest."""
    from types import SimpleNamespace

    from towerkit.data.vocab import Vocab
    from towerkit.serve.model import Served

    titles = ["A Toy Story", "Toy Story 2", "Toy Story", "Story", "toy story"]
    retriever = SimpleNamespace(item_vocab=Vocab(np.arange(1, 6), name="item"),
                                titles=np.asarray(["", *titles], dtype=object))  # fmt: skip
    served = Served(retriever, Path("."), "v", "exact", {})
    found = [item["title"] for item in served.search_items("Toy Story", 10)]
    assert found == ["Toy Story", "toy story", "Toy Story 2", "A Toy Story"]
    assert [item["id"] for item in served.search_items("story 2", 10)] == [2]


def test_a_run_directory_is_served_through_onnx(runs):
    direct = Server(runs["dssm"], "--index", "faiss-hnsw")
    try:
        ready = direct.get("/readyz").json()
        assert ready["index"] == "faiss-hnsw"
        assert len(direct.post("/recommend", {"history": [1, 2]}).json()["items"]) == 10
    finally:
        direct.stop()


def test_a_multi_interest_model_is_served_as_towerkit_recommend_gives(runs, tmp_path):
    """K query vectors per user through the ONNX tower, searched per interest and merged, in
    the server's micro-batches as in `Retriever.from_run`."""
    run = RunDir(runs["comirec_sa"])
    out = export_run(run, tmp_path / "mi")
    stored = ExportDir(out).retriever().user_vectors
    assert stored.shape == (len(run.user_vocab) + 1, 3, 16)
    retriever = Retriever.from_run(run)
    served = Server(out)
    try:
        users = [int(u) for u in run.user_vocab.raw[[0, 5, 9]]]
        history = [int(i) for i in run.item_vocab.raw[[3, 9, 4]]]
        answers = served.post("/recommend/batch", {"queries": [
            {"user": users[0], "k": 5}, {"history": history, "k": 5}, {"user": users[1]},
            {"user": users[2], "k": 3}]}).json()["results"]  # fmt: skip
        expected = [
            retriever.recommend([users[0]], 5),
            retriever.recommend_history([history], 5),
            retriever.recommend([users[1]], 10),
            retriever.recommend([users[2]], 3),
        ]
        for answer, want in zip(answers, expected, strict=True):
            assert [i["id"] for i in answer["items"]] == list(want.items[0])
            np.testing.assert_allclose([i["score"] for i in answer["items"]], want.scores[0],
                                       atol=1e-5)  # fmt: skip
    finally:
        served.stop()


def test_the_openapi_schema_fuzzed_gives_no_server_error(server):
    import hypothesis
    import schemathesis
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/recommend/batch", "/similar"}
    for operation in operations:
        if operation.path == "/admin/reload":
            continue  # reloading arbitrary paths is its own test

        @hypothesis.settings(max_examples=40, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))  # fmt: skip
        @hypothesis.given(case=operation.as_strategy())
        def fuzz(case):
            case.call_and_validate(base_url=server.url, checks=[not_a_server_error])

        fuzz()


def test_any_request_body_is_an_answer_or_a_4xx_naming_the_field(server):
    """Hypothesis writes bodies from the request's own fields, each holding a plausible value
    or JSON of another kind (a bool where a number goes, a float, a list, a huge integer,
    nesting): the app answers 200 with at most k known items, or a 4xx whose detail names the
    problem; never a 500. Booleans are never numbers or ids."""
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from towerkit.serve.app import create_app

    export = ExportDir(server.directory)
    users = [int(u) for u in export.user_vocab.raw[:3]]
    items = [int(i) for i in export.item_vocab.raw[:5]]
    other = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
        | st.text(max_size=6),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                    max_size=2),
        max_leaves=4,
    )  # fmt: skip
    ids = st.sampled_from(users) | st.integers(-5, 10**6) | st.text(max_size=4)
    fields = {
        "user": ids | other,
        "history": st.lists(st.sampled_from(items) | ids, max_size=4) | other,
        "features": st.dictionaries(st.sampled_from(["gender", "age", "height"]),
                                    st.sampled_from(["F", "M", 1, None]), max_size=2) | other,
        "k": st.integers(-2, 100) | other,
        "exclude": st.lists(st.sampled_from(items), max_size=3) | other,
        "filter": st.sampled_from(['label == "Comedy"', "count > 3", "count >", ""]) | other,
        "filter_seen": st.booleans() | other,
        "colour": other,
    }  # fmt: skip
    body = st.fixed_dictionaries({}, optional=fields) | other

    with TestClient(create_app(server.directory), raise_server_exceptions=False) as client:

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(body=body, route=st.sampled_from(["/recommend", "/similar"]))
        def answer(body, route):
            if route == "/similar" and isinstance(body, dict):
                body = {("item" if k == "user" else k): v for k, v in body.items()}
            text = json.dumps(body)  # NaN and Infinity too, which strict JSON has not
            response = client.post(route, content=text,
                                   headers={"content-type": "application/json"})  # fmt: skip
            assert response.status_code in (200, 404, 413, 422), (body, response.text)
            if response.status_code != 200:
                detail = response.json()["detail"]
                assert isinstance(detail, str) and detail and "\n" not in detail, detail
                return
            listed = response.json()["items"]
            assert len(listed) <= body.get("k", 10)
            assert len({i["id"] for i in listed}) == len(listed)
            for key in ("user", "item", "k"):
                assert not isinstance(body.get(key), bool), (body, response.text)

        answer()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_page_in_a_real_browser(server, runs):
    """Recommend for a user and for picked items, and the five defects of issue 28: results
    cleared on error, k checked (not silently 10), Enter with no item picked refused, long
    queries handled, exact titles first, and the model's name shown."""
    from playwright.sync_api import sync_playwright

    run = RunDir(runs["youtube_dnn"])
    user = str(run.user_vocab.raw[5])
    answer = server.post("/recommend", {"user": int(user), "k": 10}).json()
    expected = [item["title"] for item in answer["items"]]
    model = server.get("/readyz").json()["model"]
    rows = "document.querySelectorAll('#recs tbody tr').length"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(server.url)
            page.wait_for_function(
                f"document.getElementById('model').textContent.includes('{model}')"
            )
            page.fill("#user", user)
            page.click("#go-user")
            page.wait_for_selector("#recs tbody tr >> nth=9")
            shown = page.locator("#recs tbody tr td:nth-child(2)").all_inner_texts()
            assert shown == expected
            assert page.locator("#history tbody tr").count() > 0
            assert model in page.inner_text("#model")  # the model's name, after an answer too
            # k is checked: a word is an error (and the answer before it goes), not k=10.
            page.fill("#k", "ten")
            page.click("#go-user")
            page.wait_for_function(f"{rows} == 0")
            assert "k must be a whole number from 1 to 80" in page.inner_text("#error")
            assert page.locator("#history tbody tr").count() == 0
            page.fill("#k", "3")
            page.click("#go-user")
            page.wait_for_function(f"{rows} == 3")
            assert page.inner_text("#error") == ""
            # An error clears the results shown before it.
            page.fill("#user", "no-such-user")
            page.click("#go-user")
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "unknown user" in page.inner_text("#error")
            assert page.locator("#recs tbody tr").count() == 0
            # Enter in the item field with nothing picked: refused, without a request.
            page.fill("#k", "10")
            page.focus("#item-search")
            page.keyboard.press("Enter")
            page.wait_for_function("document.getElementById('error').textContent.includes('pick')")
            # A query longer than the server reads: cut, answered, no error.
            page.fill("#item-search", "film [1" + "x" * 400)
            page.wait_for_timeout(600)
            assert page.locator("#suggest li").count() == 0 and not errors
            # The exact title first, then the picked items recommend.
            title = run.titles[12]
            page.fill("#item-search", title.lower())
            page.wait_for_selector("#suggest li")
            assert page.locator("#suggest li").first.inner_text() == title
            page.locator("#suggest li").first.click()
            page.click("#go-history")
            page.wait_for_function("document.querySelectorAll('#history tbody tr').length == 1")
            page.wait_for_selector("#recs tbody tr >> nth=9")
            assert page.inner_text("#error") == "" and not errors
        finally:
            browser.close()


def test_serve_refuses_what_it_cannot_load(tmp_path, runs):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["sasrec"], unfinished)
    status = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**status, "status": "training"}))
    done = subprocess.run([sys.executable, "-m", "towerkit.cli", "serve", str(unfinished),
                           "--port", str(free_port())], capture_output=True, text=True,
                          timeout=120, env={**os.environ})  # fmt: skip
    assert done.returncode == 1 and "the run is unfinished" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_admin_route_belongs_to_the_app_given_the_token(runs, tmp_path):
    """Routes are shared by every app; the admin route is added per app, so an app made after
    one with a token has none."""
    import gc

    from towerkit.serve.app import create_app

    export = export_run(runs["youtube_dnn"], tmp_path / "yt")
    import torch

    threads = torch.get_num_threads()
    try:
        with_token = create_app(export, admin_token=TOKEN)
        without = create_app(export)
    finally:
        gc.unfreeze()
    assert torch.get_num_threads() == threads  # an app leaves the process's pools to serve()
    paths = {app: set(app.openapi()["paths"]) for app in (with_token, without)}
    assert "/admin/reload" in paths[with_token] and "/admin/reload" not in paths[without]
    assert "/recommend" in paths[without]
