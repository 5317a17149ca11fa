"""New items without retraining, live: the exported item tower (ONNX, with its parity), and
`POST /admin/items` on a real server under load: an item by its features, one by its vector and a
changed one enter the index at once, no request fails, and `/recommend` returns them. Every index
kind takes them (exact, Faiss by adding, Milvus by its upsert, Annoy by a new build)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import item_feature_runs, towerkit
from test_serve import TOKEN, Server, under_load
from towerkit.retrieval.export import ExportDir, export_run
from towerkit.retrieval.towers import OnnxItemTower
from towerkit.runs import RunDir
from towerkit.serve.bodies import ItemUpsert
from towerkit.serve.loading import load_export
from towerkit.serve.state import upserted

BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A DSSM whose item tower reads genres (multi-valued) and year (numeric), and a
    YouTubeDNN (ids only), each exported."""
    root = tmp_path_factory.mktemp("live")
    out = item_feature_runs(root, users=300, seed=3)
    for name in list(out):
        out[f"{name}-export"] = export_run(out[name], root / f"{name}-export")
    return out


def test_the_item_tower_is_exported_with_its_parity(runs, tmp_path):
    export = ExportDir(runs["dssm-export"])
    info = export.manifest["item_tower"]
    assert info["features"] == {"genres": "multi", "year": "numeric"}
    assert info["parity"] <= 1e-5
    tower, run = export.item_tower(), RunDir(runs["dssm"])
    known = np.arange(1, len(run.item_vocab) + 1)
    stored = np.stack(pq.read_table(run.path / "items.parquet").column("vector").to_numpy(
        zero_copy_only=False))  # fmt: skip
    np.testing.assert_allclose(tower(known), stored, atol=1e-5)
    # a new item from its features: what `towerkit embed` (PyTorch) gives it
    new = pd.DataFrame({"item": [901], "genres": [["Drama", "Action"]], "year": [1977]})
    new.to_parquet(tmp_path / "new.parquet")
    done = towerkit("embed", str(run.path), "--items", str(tmp_path / "new.parquet"),
                    "--out", str(tmp_path / "v.parquet"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    embedded = pq.read_table(tmp_path / "v.parquet").column("vector").to_numpy(False)[0]
    genres = run.item_features.vocabs["genres"]
    codes = np.zeros((1, run.item_features.values["genres"].shape[1]), dtype=np.int64)
    codes[0, :2] = genres.encode(["Drama", "Action"])
    got = tower(np.zeros(1, np.int64), {"genres": codes, "year": np.array([1977.0], np.float32)})
    np.testing.assert_allclose(got[0], embedded, atol=1e-5)
    # an ID-only model's item tower: ids in, its table's rows out
    youtube = ExportDir(runs["youtube_dnn-export"])
    assert youtube.manifest["item_tower"]["features"] == {}
    with torch.no_grad():
        table = RunDir(runs["youtube_dnn"]).load_model().encode_items(torch.arange(1, 61)).numpy()
    np.testing.assert_allclose(youtube.item_tower()(np.arange(1, 61)), table, atol=1e-5)
    assert isinstance(youtube.item_tower(), OnnxItemTower)


def test_items_upserted_under_load_are_recommended_at_once(runs):
    export = runs["dssm-export"]
    server = Server(export, "--admin-token", TOKEN)
    try:
        retriever = ExportDir(export).retriever()
        user = int(retriever.user_vocab.raw[0])
        query = retriever.user_queries(retriever.encode_users([user]))[0]
        before = server.post("/recommend", {"user": user, "k": 5}).json()["items"]
        changed = before[0]["id"]  # a known item, given the opposite of the user's query
        bodies = [{"user": user, "k": 10}, {"history": [1, 2, 3]}]
        with under_load(server.url, bodies, clients=3) as load:
            body = {"items": [
                {"id": 9001, "vector": (query * 3).tolist(), "title": "The Perfect Match",
                 "attributes": {"count": 7}},
                {"id": 9002, "features": {"genres": ["Comedy"], "year": 1984}},
                {"id": changed, "vector": (-query).tolist()},
            ]}  # fmt: skip
            assert server.post("/admin/items", body).status_code == 401
            answer = server.post("/admin/items", body, headers=BEARER)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"added": 2, "updated": 1, "items": 62, "index": "exact",
                                     "rebuilt": False}  # fmt: skip
            top = server.post("/recommend", {"user": user, "k": 5}).json()["items"]
            assert top[0]["id"] == 9001 and top[0]["title"] == "The Perfect Match"
            assert top[0]["score"] == pytest.approx(1.0, abs=1e-5)  # cosine with its own query
            assert changed not in [item["id"] for item in top]
            # the item embedded from its features is recommended with the item tower's vector
            only = server.post("/recommend", {"user": user, "k": 1, "filter": "item == 9002"})
            (found,) = only.json()["items"]
            tower = ExportDir(export).item_tower()
            genres = tower.item_features.vocabs["genres"]
            width = tower.item_features.values["genres"].shape[1]
            codes = np.zeros((1, width), dtype=np.int64)
            codes[0, 0] = genres.encode(["Comedy"])[0]
            vector = tower(
                np.zeros(1, np.int64), {"genres": codes, "year": np.array([1984.0], np.float32)}
            )[0]
            cosine = vector @ query / np.linalg.norm(vector) / np.linalg.norm(query)
            assert found["id"] == 9002 and found["score"] == pytest.approx(cosine, abs=1e-5)
            # the new items are items like any other: neighbours, autocomplete, histories
            similar = server.post("/similar", {"item": 9002, "k": 3}).json()["items"]
            assert len(similar) == 3 and 9002 not in [item["id"] for item in similar]
            assert server.get("/items?q=perfect match").json()[0]["id"] == 9001
            history = server.post("/recommend", {"history": [9002, 1], "k": 5})
            assert history.status_code == 200, history.text
            # a batch with one bad item changes nothing
            bad = {"items": [{"id": 9003, "vector": [1.0, 2.0]}]}
            refused = server.post("/admin/items", bad, headers=BEARER)
            assert refused.status_code == 422 and "a vector of 2 numbers" in refused.text
            unknown = {"items": [{"id": 9004, "features": {"genres": ["Comedy"]}}]}
            refused = server.post("/admin/items", unknown, headers=BEARER)
            assert refused.status_code == 422 and "no value for the item feature(s) year" in (
                refused.text)  # fmt: skip
            assert server.post("/similar", {"item": 9003}).status_code in (404, 422)
        assert not load.failures
        metrics = server.get("/metrics").text
        assert "towerkit_items_upserted_total 3.0" in metrics
    finally:
        server.stop()


def test_an_id_only_model_takes_vectors_but_not_features(runs):
    served = load_export(runs["youtube_dnn-export"], runs["youtube_dnn-export"])
    try:
        with pytest.raises(ValueError, match="item tower reads item ids only"):
            upserted(served, [ItemUpsert(id=7001, features={"genres": ["Drama"]})])
        new, added = upserted(served, [ItemUpsert(id=7001, vector=[0.1] * 16)])
        assert added == 1 and new.n_items == served.n_items + 1
        assert served.n_items == 60  # the model served before is left as it was
    finally:
        served.close()


@pytest.mark.parametrize("index", ["faiss-hnsw", "annoy", "milvus"])
def test_every_index_kind_takes_new_items(runs, tmp_path, index):
    options = {"uri": str(tmp_path / "items.db")} if index == "milvus" else {}
    served = load_export(runs["youtube_dnn-export"], runs["youtube_dnn-export"], index, **options)
    try:
        retriever = served.retriever
        user = retriever.user_vocab.raw[:1]
        query = retriever.user_queries(retriever.encode_users(user))[0]
        changed = int(retriever.recommend(user, 1).items[0, 0])
        items = [ItemUpsert(id=7001, vector=(2 * query).tolist()),
                 ItemUpsert(id=changed, vector=(-query).tolist())]  # fmt: skip
        new, added = upserted(served, items)
        assert added == 1
        top = new.retriever.recommend(user, 5).items[0].tolist()
        assert top[0] == 7001 and changed not in top
        assert new.retriever.index.upserts == (index != "annoy")
        filtered = new.retriever.recommend(user, 5, where="count >= 0").items[0].tolist()
        assert filtered[0] == 7001  # a new item's count is 0, not missing
    finally:
        served.close()
