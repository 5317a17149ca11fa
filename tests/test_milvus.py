"""Filters on item attributes on every back end, and Milvus behind the index protocol: against
a real Milvus Lite file and a real Milvus Lite server process on loopback (no mock), for search,
export, serving, the alias switch under load, and a database that goes away and comes back."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import free_port, prepare_log, small_config, towerkit, walk_log
from test_serve import TOKEN, Server
from towerkit.index import (
    FilterError,
    IndexArgumentError,
    MilvusIndex,
    VectorDatabaseError,
    load_index,
    make_index,
    parse_filter,
    recall_at_k,
)
from towerkit.retrieval import Retriever
from towerkit.retrieval.export import ExportDir, export_run
from towerkit.runs import pipeline
from towerkit.runs.preparation import item_labels

# Milvus Lite holds its file per process: each command in a process of its own, as users run it.
cli = partial(towerkit, process=True)

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------

TABLE = pd.DataFrame(
    {
        "item": [10, 11, 12, 13, 14, 15],
        "title": ["Heat", "Alien", "Big", "Up", "Ran", None],
        "count": [5, 50, 500, 0, 120, 7],
        "label": ["Drama", "Horror", "Comedy", "Comedy", "Drama", None],
    }
)


@pytest.mark.parametrize(
    ("text", "kept", "expression"),
    [
        ('label == "Comedy"', [12, 13], 'label == "Comedy"'),
        ("label == 'Comedy' and count >= 100", [12], '(label == "Comedy" and count >= 100)'),
        ("10 <= count < 500", [11, 14], "(10 <= count and count < 500)"),
        ('label in ["Drama", "Horror"]', [10, 11, 14], 'label in ["Drama", "Horror"]'),
        ('label not in ["Drama"]', [11, 12, 13], 'label not in ["Drama"]'),
        ('not (label == "Drama") or count == 5', [10, 11, 12, 13, 15],
         '(not (label == "Drama") or count == 5)'),
        ("count > -1 and item != 13", [10, 11, 12, 14, 15], "(count > -1 and item != 13)"),
        ('title == "Up"', [13], 'title == "Up"'),
    ],
)  # fmt: skip
def test_a_filter_keeps_the_rows_it_names_and_renders_for_milvus(text, kept, expression):
    where = parse_filter(text, TABLE.columns)
    assert TABLE["item"][where.mask(TABLE)].tolist() == kept
    assert where.expression == expression
    assert parse_filter(where.expression).mask(TABLE).tolist() == where.mask(TABLE).tolist()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the filter is empty"),
        ("genre == 'Drama'", "unknown item attribute(s) genre; the items have: item, title"),
        ("label = 'Drama'", "is not valid"),
        ("label == Drama", "unknown item attribute(s) Drama"),
        ("label.upper() == 'X'", "label.upper() is not a string or a number"),
        ("count in 5", "`in` takes a list"),
        ("1 < 2", "compares no attribute"),
        ("count == True", "is not a string or a number"),
        ("__import__('os')", "is not allowed"),
        ("not " * 1000 + "count > 1", "nests 1003 levels deep; at most 100 are read"),
        ("not " * 30_000 + "count > 1", "nests more than 100 levels deep"),
        ("(" * 250 + "count > 1" + ")" * 250, "not valid"),  # Python's own limit: 200
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else v,
)
def test_bad_filters_are_one_line_naming_the_problem(text, message):
    with pytest.raises(FilterError) as caught:
        parse_filter(text, TABLE.columns)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_filter_comparing_text_with_a_number_is_an_error():
    with pytest.raises(FilterError, match="label is text; compared with 3"):
        parse_filter("label > 3", TABLE.columns).mask(TABLE)
    with pytest.raises(FilterError, match='count is a number; compared with "x"'):
        parse_filter("count == 'x'", TABLE.columns).mask(TABLE)


def clustered(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Vectors around 50 centres, 200 queries, and attributes (a label, a count)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    vectors = centres[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, dim))
    queries = centres[rng.integers(0, 50, 200)] + 0.6 * rng.standard_normal((200, dim))
    attributes = pd.DataFrame(
        {
            "item": np.arange(1, n + 1),
            "label": rng.choice(["Drama", "Comedy", "Horror", "Action"], n),
            "count": rng.integers(0, 1000, n),
        }
    )
    return vectors.astype(np.float32), queries.astype(np.float32), attributes


WHERE = 'label in ["Comedy", "Horror"] and 100 <= count < 600'


@pytest.mark.parametrize(
    ("kind", "options", "least_recall"),
    [
        ("exact", {}, 1.0),
        ("faiss-flat", {}, 1.0),
        ("milvus", {"index_type": "FLAT"}, 1.0),
        ("milvus", {}, 0.95),
        ("faiss-hnsw", {}, 0.95),
        ("milvus", {"index_type": "IVF_FLAT", "nprobe": 32}, 0.85),
        ("faiss-ivf", {"nprobe": 32}, 0.85),
        ("annoy", {}, 0.85),
    ],
)
def test_filtered_search_is_exact_search_over_the_kept_items(kind, options, least_recall):
    """Every back end with a filter against exact search over only the rows the filter keeps
    (built apart, from those rows alone), with exclusions on top."""
    vectors, queries, attributes = clustered(4000, 16)
    ids = np.arange(1, 4001)
    kept = (attributes["label"].isin(["Comedy", "Horror"]) & (attributes["count"] >= 100)
            & (attributes["count"] < 600)).to_numpy()  # fmt: skip
    reference = make_index("exact", "cosine").build(vectors[kept], ids=ids[kept])
    excluded = [reference.search(q[None], 3)[0][0] for q in queries]  # each query's best 3
    expected, expected_scores = reference.search(queries, 10, exclude=excluded)
    index = make_index(kind, "cosine", **options).build(vectors, ids=ids, attributes=attributes)
    try:
        found, scores = index.search(queries, 10, exclude=excluded, where=WHERE)
    finally:
        index.close()
    assert kept[found[found > 0] - 1].all()  # nothing the filter drops
    assert not np.isin(found, np.concatenate(excluded)).any() or all(
        not np.isin(found[r], excluded[r]).any() for r in range(len(found))
    )
    recall = recall_at_k(found, expected)
    assert recall >= least_recall, recall
    if least_recall == 1.0:
        np.testing.assert_array_equal(found, expected)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_a_filter_that_keeps_nothing_gives_padding_everywhere():
    vectors, queries, attributes = clustered(500, 8)
    for kind in ("exact", "faiss-hnsw", "annoy", "milvus"):
        index = make_index(kind, "dot").build(vectors, attributes=attributes)
        ids, scores = index.search(queries[:5], 10, where="count > 5000")
        index.close()
        assert (ids == -1).all() and np.isneginf(scores).all(), kind


def test_an_index_without_attributes_says_it_cannot_filter():
    index = make_index("exact").build(np.eye(3, dtype=np.float32))
    with pytest.raises(FilterError, match="holds no item attributes"):
        index.search(np.eye(3, dtype=np.float32), 2, where="count > 1")


# --------------------------------------------------------------------------------------------
# Milvus behind the index protocol
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_milvus_flat_is_exact_search_for_every_similarity(similarity, tmp_path):
    vectors, queries, attributes = clustered(2000, 16, seed=1)
    ids = np.arange(100, 2100) * 3  # ids that are not positions
    exact = make_index("exact", similarity).build(vectors, ids=ids)
    milvus = make_index("milvus", similarity, uri=str(tmp_path / "items.db"), index_type="FLAT")
    milvus.build(vectors, ids=ids, attributes=attributes)
    exclude = [ids[[r, r + 1]] for r in range(len(queries))]
    got, got_scores = milvus.search(queries, 20, exclude=exclude)
    want, want_scores = exact.search(queries, 20, exclude=exclude)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
    # multi-interest queries: searched per interest, merged by best score
    multi = queries[:40].reshape(20, 2, 16)
    np.testing.assert_array_equal(
        milvus.search_multi(multi, 10, exclude[:20])[0],
        exact.search_multi(multi, 10, exclude[:20])[0],
    )
    milvus.close()


def test_milvus_hnsw_recall_at_the_defaults_is_at_least_095(tmp_path):
    vectors, queries, _ = clustered(20_000, 32, seed=2)
    exact = make_index("exact", "cosine").build(vectors)
    milvus = make_index("milvus", "cosine", uri=str(tmp_path / "items.db")).build(vectors)
    recall = recall_at_k(milvus.search(queries, 10)[0], exact.search(queries, 10)[0])
    milvus.close()
    assert recall >= 0.95, recall


def test_a_saved_milvus_index_loads_and_checks_its_collection(tmp_path):
    vectors, queries, attributes = clustered(300, 8, seed=3)
    uri = str(tmp_path / "items.db")
    built = make_index("milvus", "cosine", uri=uri, collection="films", index_type="FLAT")
    built.build(vectors, attributes=attributes).save(tmp_path / "index")
    expected = built.search(queries, 5, where=WHERE)
    built.close()
    loaded = load_index(tmp_path / "index")
    assert loaded.pinned == built.pinned and loaded.pinned.startswith("films_")
    np.testing.assert_array_equal(loaded.search(queries, 5, where=WHERE)[0], expected[0])
    assert loaded.ready() is None
    loaded.client.drop_collection(loaded.pinned)
    with pytest.raises(VectorDatabaseError, match=r"does not exist \(dropped\?\)"):
        loaded.search(queries, 5)
    assert "dropped?" in loaded.ready()
    loaded.close()
    with pytest.raises(VectorDatabaseError, match=f"no collection {built.pinned} \\(dropped\\?\\)"):
        load_index(tmp_path / "index")
    # another model's collection: refused with both dimensions named
    other = make_index("milvus", "cosine", uri=uri, collection="other").build(vectors[:, :4])
    other.close()
    with pytest.raises(
        VectorDatabaseError, match="holds vectors of dimension 4, this model's are 8"
    ):
        MilvusIndex.attach("cosine", np.arange(300), 8, uri=uri, pinned=other.pinned)


def test_the_alias_moves_only_once_a_collection_is_complete(tmp_path):
    vectors, _, _ = clustered(200, 8, seed=4)
    uri = str(tmp_path / "items.db")
    builds = [make_index("milvus", "dot", uri=uri, collection="films").build(vectors + i)
              for i in range(3)]  # fmt: skip
    client = builds[-1].client
    assert client.describe_alias("films")["collection_name"] == builds[2].pinned
    # the one before stays (a server may still search it); older ones are dropped
    assert sorted(client.list_collections()) == sorted([builds[1].pinned, builds[2].pinned])
    with pytest.raises(IndexArgumentError, match="has a collection named 'films_keep'"):
        client.create_collection("films_keep", dimension=8)
        make_index("milvus", uri=uri, collection="films_keep").build(vectors)
    for index in builds:
        index.close()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"uri": "items.sqlite"}, IndexArgumentError, "a Milvus Lite file's name ends in .db"),
        ({"collection": "1films"}, IndexArgumentError, "letters, digits and _"),
        ({"index_type": "DISKANN"}, IndexArgumentError, "index_type=.DISKANN. must be one of"),
        ({"M": 0}, IndexArgumentError, r"M=0 must lie in \[2, 1,024\]"),
    ],
)
def test_bad_milvus_options_are_one_line(options, error, message):
    with pytest.raises(error, match=message):
        make_index("milvus", **options).build(np.eye(4, dtype=np.float32))


def test_an_unreachable_milvus_server_is_one_line_within_the_timeout():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(VectorDatabaseError, match=f"Milvus at http://127.0.0.1:{port}"):
        make_index("milvus", uri=f"http://127.0.0.1:{port}", timeout=3).build(
            np.eye(4, dtype=np.float32)
        )
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------------------------
# Export, recommend and serve on Milvus
# --------------------------------------------------------------------------------------------


class MilvusServer:
    """A Milvus Lite gRPC server in its own process on a free loopback port: what
    ``http://host:19530`` is to a cluster, to the same client."""

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data, self.port = data, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError("Milvus Lite did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs over 80 items whose items.parquet carries a label (the rarer genre)."""
    lengths = np.random.default_rng(5).integers(6, 21, 600)
    log = walk_log(lengths, 80, seed=5)
    prepared = prepare_log(log)
    prepared = dataclasses.replace(
        prepared, labels=item_labels(log.items, prepared.encoded.item_vocab)
    )
    root = tmp_path_factory.mktemp("milvus-runs")
    out = {}
    for name, model in {
        "youtube_dnn": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
        "sasrec": {"name": "sasrec", "embedding_dim": 16, "n_heads": 2},
    }.items():
        config = small_config(model=model, train={"epochs": 2, "batch_size": 256})
        out[name] = pipeline.train(config, prepared, run=root / name).run.path
    return out


def test_export_to_a_milvus_lite_file_recommends_as_exact_search(runs, tmp_path):
    db = tmp_path / "items.db"
    command = ["export", str(runs["youtube_dnn"]), "--out", str(tmp_path / "export")]
    done = cli(
        *command, "--to", "milvus", str(db), "--collection", "films", "-o", "index_type=FLAT"
    )
    assert done.returncode == 0, done.stderr
    assert "in Milvus at" in done.stdout and "alias films" in done.stdout
    export = ExportDir(tmp_path / "export")
    shipped = export.manifest["index"]
    assert shipped["kind"] == "milvus" and shipped["options"]["uri"] == str(db.resolve())
    retriever = export.retriever()
    reference = Retriever.from_run(runs["youtube_dnn"])
    users = list(reference.user_vocab.raw[:40])
    got, want = retriever.recommend(users, 10), reference.recommend(users, 10)
    np.testing.assert_array_equal(got.ids, want.ids)
    comedies = retriever.recommend(users, 10, where='label == "Comedy"')
    masked = reference.recommend(users, 10, where='label == "Comedy"')
    np.testing.assert_array_equal(comedies.ids, masked.ids)
    labels = reference.index.attributes["label"].to_numpy()
    assert (labels[comedies.ids[comedies.ids > 0] - 1] == "Comedy").all()
    retriever.index.close()
    # the collection alone (no export directory), under another alias
    alone = cli("export", str(runs["sasrec"]), "--to", "milvus", str(db), "--collection", "seq")
    assert alone.returncode == 0, alone.stderr
    assert "80 items" in alone.stdout and "alias seq" in alone.stdout
    # a Milvus Lite file is one process's at a time: another export is one line, not a hang
    holder = make_index("milvus", uri=str(db), collection="held").build(np.eye(4, dtype="f4"))
    try:
        locked = cli("export", str(runs["sasrec"]), "--to", "milvus", str(db))
    finally:
        holder.close()
    assert locked.returncode == 1 and "another process has this Milvus Lite file open" in (
        locked.stderr
    )
    assert "Traceback" not in locked.stderr


def test_a_milvus_lite_path_holding_something_else_is_one_line_and_nothing_is_made(
    runs, tmp_path, monkeypatch
):
    """Milvus Lite says only "Open local milvus failed" for a file or a foreign folder, and
    makes an empty database where one is read: each is named, and nothing is created. (The
    commands run in this process: each fails before any database is opened.)"""
    run = str(runs["youtube_dnn"])
    notes = tmp_path / "notes.db"
    notes.write_text("my notes")
    other = tmp_path / "other.db"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"x")
    for path, message in [(notes, "(a file;"), (other, "(a folder of other files)")]:
        done = towerkit(
            "export", run, "--out", str(tmp_path / "export"), "--to", "milvus", str(path)
        )
        assert done.returncode == 1, done.stderr
        assert f"{path}: not a Milvus Lite database {message}" in done.stderr
        assert "Traceback" not in done.stderr and "Open local milvus" not in done.stderr
        assert not (tmp_path / "export").exists()
    assert notes.read_text() == "my notes" and [p.name for p in other.iterdir()] == ["photo.jpg"]

    missing = tmp_path / "missing.db"
    read = towerkit("recommend", run, "--user", "1", "--index", "milvus",
               "-o", f"uri={missing}", "-o", "pinned=films")  # fmt: skip
    assert read.returncode == 1 and f"{missing}: no such Milvus Lite database" in read.stderr
    assert not missing.exists()
    # a question it cannot answer (an unknown user, a bad filter) writes no database either
    for args, message in [
        (["--user", "987654"], "unknown user id(s) 987654"),
        (["--user", "1", "--filter", "genre == 1"], "unknown item attribute"),
    ]:
        done = towerkit("recommend", run, *args, "--index", "milvus", "-o", f"uri={missing}")
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert not missing.exists()  # fmt: skip

    real = os.access  # checked with os.access, so that it holds for root too
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == locked else real(p, m))
    index = make_index("milvus", uri=str(locked / "sub" / "items.db"))
    with pytest.raises(VectorDatabaseError, match=f"{locked}/sub/items.db: {locked} is not wr"):
        index.build(np.eye(4, dtype="f4"))
    assert not (locked / "sub").exists()


def test_recommend_with_a_filter_and_its_errors(runs, tmp_path):
    run = str(runs["youtube_dnn"])
    cli = towerkit  # in this process: none of these commands opens a Milvus Lite file
    done = cli("recommend", run, "--user", "1", "-k", "5", "--filter", 'label == "Drama"')
    assert done.returncode == 0, done.stderr and 'label == "Drama"' in done.stdout
    bad = cli("recommend", run, "--user", "1", "--filter", "genre == 'Drama'")
    assert bad.returncode == 1 and "unknown item attribute(s) genre" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    unreachable = cli("recommend", run, "--user", "1", "--index", "milvus", "-o",
                      f"uri=http://127.0.0.1:{free_port()}", "-o", "timeout=3")  # fmt: skip
    assert unreachable.returncode == 1 and "Milvus at http://127.0.0.1:" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    neither = cli("export", run)
    assert neither.returncode == 1 and "give --out DIR" in neither.stderr
    nowhere = cli("export", run, "--out", str(tmp_path / "x"), "--index", "milvus")
    assert nowhere.returncode == 1 and "--to milvus items.db" in nowhere.stderr
    assert not (tmp_path / "x").exists()


def test_serving_on_a_milvus_server_switch_drop_and_recovery(runs, tmp_path):
    """The served index is a collection of a Milvus server process: filters in requests, a
    reload to another export under load with no failed request, a dropped collection and a
    database that goes away answer 503 naming it, and the server answers again once it is
    back."""
    milvus = MilvusServer(tmp_path / "milvus")
    try:
        options = {"uri": milvus.uri, "collection": "films", "index_type": "FLAT"}
        first = export_run(runs["youtube_dnn"], tmp_path / "a", index="milvus",
                           index_options=options)  # fmt: skip
        server = Server(first, "--admin-token", TOKEN)
        try:
            _serve_and_switch(server, milvus, runs, tmp_path, options)
        finally:
            server.stop()
    finally:
        milvus.stop()


def _serve_and_switch(server, milvus, runs, tmp_path, options):
    reference = Retriever.from_run(runs["youtube_dnn"])
    answer = server.post("/recommend", {"user": 1, "k": 10, "filter": 'label == "Comedy"'})
    assert answer.status_code == 200, answer.text
    expected = reference.recommend([1], 10, where='label == "Comedy"')
    assert [i["id"] for i in answer.json()["items"]] == [i for i in expected.items[0] if i]
    similar = server.post("/similar", {"item": 1, "k": 5, "filter": "count >= 1"})
    assert similar.status_code == 200 and len(similar.json()["items"]) == 5
    bad = server.post("/recommend", {"user": 1, "filter": "genre == 1"})
    assert bad.status_code == 422 and "unknown item attribute(s) genre" in bad.json()["detail"]
    ready = server.get("/readyz").json()
    assert ready["ready"] and ready["index"] == "milvus"

    # a new export under the same alias, then a reload, while 4 clients keep asking
    failures, done, count = [], threading.Event(), [0]

    def load():
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 120
            while not done.is_set() and time.monotonic() < deadline:
                response = client.post(f"{server.url}/recommend", json={"user": 1, "k": 5})
                count[0] += 1
                if response.status_code != 200:
                    failures.append(response.text)

    def through_the_alias():
        """A reader of the alias itself, as other services would search it."""
        reader = MilvusIndex.attach("cosine", np.arange(1, 81), 16, uri=milvus.uri,
                                    pinned="films")  # fmt: skip
        query = np.ones((1, 16), dtype=np.float32)
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            try:
                ids, _ = reader.search(query, 10)
                count[0] += 1
                if (ids <= 0).any():
                    failures.append(f"a short list through the alias: {ids}")
            except VectorDatabaseError as err:
                failures.append(str(err))
        reader.close()

    workers = [threading.Thread(target=load) for _ in range(4)]
    workers.append(threading.Thread(target=through_the_alias))
    for worker in workers:
        worker.start()
    try:
        second = export_run(runs["sasrec"], tmp_path / "b", index="milvus", index_options=options)
        bearer = {"authorization": f"Bearer {TOKEN}"}
        swap = server.post("/admin/reload", {"path": str(second)}, headers=bearer)
        assert swap.status_code == 200, swap.text
        time.sleep(1)
    finally:
        done.set()
        for worker in workers:
            worker.join()
    assert not failures and count[0] > 20
    pinned = ExportDir(second).manifest["index"]["options"]["pinned"]
    assert server.get("/readyz").json()["model_version"] == ExportDir(second).version
    admin = make_index("milvus", uri=milvus.uri)
    assert admin.client.describe_alias("films")["collection_name"] == pinned
    served = server.post("/recommend", {"user": 1, "k": 10}).json()["items"]
    sasrec = Retriever.from_run(runs["sasrec"]).recommend([1], 10)
    assert [i["id"] for i in served] == list(sasrec.items[0])

    # the database goes away: 503 naming it, /readyz too; then it comes back
    milvus.stop()
    down = server.post("/recommend", {"user": 1})
    assert down.status_code == 503 and f"Milvus at {milvus.uri}" in down.json()["detail"]
    assert server.get("/readyz").status_code == 503
    milvus.start()
    deadline = time.monotonic() + 60
    while server.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.5)
    assert server.post("/recommend", {"user": 1, "k": 10}).json()["items"] == served

    # its collection dropped under it: 503 naming it, never a wrong list
    admin.client.drop_collection(pinned)
    dropped = server.post("/recommend/batch", {"queries": [{"user": 1}, {"user": 2}]})
    assert dropped.status_code == 503 and "(dropped?)" in dropped.json()["detail"]
    not_ready = server.get("/readyz")
    assert not_ready.status_code == 503 and "dropped?" in not_ready.json()["detail"]
    admin.close()
