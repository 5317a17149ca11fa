"""The index contract, run against every back end with the exact index as the oracle."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from towerkit.index import (
    INDEXES,
    IndexArgumentError,
    IndexUnavailable,
    load_index,
    make_index,
    recall_at_k,
)
from towerkit.similarity import get_similarity

# Settings that make every approximate back end search (nearly) exhaustively on small data,
# so the contract can demand near-exact answers; default settings are checked separately.
THOROUGH = {
    "exact": {},
    "annoy": {"n_trees": 20, "search_k": 100_000},
    "faiss-flat": {},
    "faiss-hnsw": {"M": 16, "ef_search": 400},
    "faiss-ivf": {"nlist": 8, "nprobe": 8},
    "milvus": {"ef_search": 400},  # HNSW in a temporary Milvus Lite file
}
SIMILARITIES = [("cosine", False), ("dot", False), ("euclidean", False), ("euclidean", True)]


def clustered(n: int, d: int, seed: int, centers: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 2
    return (c[rng.integers(0, centers, n)] + rng.normal(size=(n, d))).astype(np.float32)


def random_exclusions(n_queries: int, ids: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(ids, size=rng.integers(0, 30), replace=False) for _ in range(n_queries)]


@pytest.mark.parametrize("kind", list(INDEXES))
@pytest.mark.parametrize("similarity,normalize", SIMILARITIES)
@pytest.mark.parametrize("n,d,k", [(300, 8, 1), (500, 16, 10), (400, 5, 37)])
@pytest.mark.parametrize("with_exclusions", [False, True])
def test_each_index_agrees_with_exact_search(kind, similarity, normalize, n, d, k, with_exclusions):
    vectors = clustered(n, d, seed=n + d)
    queries = clustered(40, d, seed=k)
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # ids are not positions
    exclude = random_exclusions(len(queries), ids, seed=k) if with_exclusions else None
    exact = make_index("exact", similarity, normalize=normalize).build(vectors, ids)
    index = make_index(kind, similarity, normalize=normalize, **THOROUGH[kind]).build(vectors, ids)
    exact_ids, exact_scores = exact.search(queries, k, exclude)
    got_ids, got_scores = index.search(queries, k, exclude)

    assert got_ids.shape == got_scores.shape == (len(queries), k)
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32
    assert recall_at_k(got_ids, exact_ids) >= 0.97
    # Best first, no excluded id, no duplicate, every row full (the index has enough items).
    assert (np.diff(got_scores, axis=1) <= 1e-5).all()
    assert (got_ids >= 0).all()
    for row, found in enumerate(got_ids):
        assert len(set(found)) == k
        if exclude is not None:
            assert not set(found) & set(exclude[row].tolist())
    # Scores are the similarity's own scores of the returned ids.
    sim = get_similarity(similarity, normalize=normalize)
    position = {i: p for p, i in enumerate(ids)}
    rows = torch.from_numpy(vectors[[position[i] for i in got_ids[:5].reshape(-1)]])
    expected = sim.rowwise(torch.from_numpy(queries[:5]).repeat_interleave(k, 0), rows)
    np.testing.assert_allclose(got_scores[:5].reshape(-1), expected.numpy(), rtol=1e-4, atol=1e-4)
    # The exact oracle itself: its top-k equals an argsort of the full score matrix.
    full = sim.pairwise(torch.from_numpy(queries), torch.from_numpy(vectors)).numpy()
    if exclude is not None:
        for row, banned in enumerate(exclude):
            full[row, [position[i] for i in banned]] = -np.inf
    np.testing.assert_allclose(exact_scores, -np.sort(-full, axis=1)[:, :k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["annoy", "faiss-hnsw", "faiss-ivf"])
def test_default_settings_find_most_of_the_exact_top10(kind):
    vectors = clustered(5000, 32, seed=1, centers=50)
    queries = clustered(200, 32, seed=2, centers=50)
    exact_ids, _ = make_index("exact", "cosine").build(vectors).search(queries, 10)
    ids, _ = make_index(kind, "cosine").build(vectors).search(queries, 10)
    assert recall_at_k(ids, exact_ids) >= 0.9


def test_annoy_default_search_k_is_wider_than_annoys_own():
    vectors = clustered(5000, 32, seed=3, centers=50)
    queries = clustered(200, 32, seed=4, centers=50)
    exact_ids, _ = make_index("exact", "cosine").build(vectors).search(queries, 10)
    ours = make_index("annoy", "cosine", n_trees=10).build(vectors).search(queries, 10)[0]
    annoys = make_index("annoy", "cosine", n_trees=10, search_k=-1).build(vectors)
    assert recall_at_k(ours, exact_ids) > recall_at_k(annoys.search(queries, 10)[0], exact_ids)


@pytest.mark.parametrize("kind", list(INDEXES))
def test_save_and_load_give_identical_results(kind, tmp_path):
    vectors, queries = clustered(400, 12, seed=5), clustered(30, 12, seed=6)
    ids = np.arange(400) + 1
    exclude = random_exclusions(30, ids, seed=7)
    # a Milvus index is saved as the collection it names: in a database that outlives it
    database = {"uri": str(tmp_path / "items.db")} if kind == "milvus" else {}
    options = {**THOROUGH[kind], **database}
    index = make_index(kind, "euclidean", normalize=True, **options).build(vectors, ids)
    before = index.search(queries, 10, exclude)
    index.save(tmp_path / "index")
    loaded = load_index(tmp_path / "index")
    assert type(loaded) is type(index) and len(loaded) == 400 and loaded.dim == 12
    assert loaded.options() == index.options()
    assert repr(loaded.similarity) == repr(index.similarity)
    after = loaded.search(queries, 10, exclude)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("kind", list(INDEXES))
def test_rows_are_padded_when_fewer_than_k_items_remain(kind):
    vectors = clustered(6, 4, seed=8)
    index = make_index(kind, "dot", **THOROUGH[kind]).build(vectors, np.arange(6) + 1)
    ids, scores = index.search(vectors[:2], 8, exclude=[[1, 2], []])
    assert (ids[0, 4:] == -1).all() and np.isneginf(scores[0, 4:]).all()
    assert sorted(ids[0, :4]) == [3, 4, 5, 6]
    assert sorted(ids[1, :6]) == [1, 2, 3, 4, 5, 6] and (ids[1, 6:] == -1).all()


@pytest.mark.parametrize("kind", list(INDEXES))
def test_exclusions_as_csr_equal_exclusions_as_lists(kind):
    vectors, queries = clustered(200, 8, seed=9), clustered(5, 8, seed=10)
    index = make_index(kind, "cosine", **THOROUGH[kind]).build(vectors)
    lists = [[0, 5], [], [7], [1, 2, 3], [999]]  # 999 is not in the index: ignored
    indptr = np.array([0, 2, 2, 3, 6, 7])
    values = np.array([0, 5, 7, 1, 2, 3, 999])
    a, b = index.search(queries, 5, lists), index.search(queries, 5, (indptr, values))
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("kind", ["faiss-flat", "faiss-hnsw", "faiss-ivf"])
@pytest.mark.parametrize("filtered", [False, True])
def test_many_exclusions_are_skipped_by_faiss_not_over_fetched(kind, filtered, monkeypatch):
    """A user with hundreds of seen items: Faiss skips them as it searches (a selector), so no
    search asks for more than k plus the few exclusions of the other rows; the answers still
    agree with exact search, the filter applied too."""
    import pandas as pd

    from towerkit.index import faiss_index

    n, k = 2000, 10
    vectors, queries = clustered(n, 16, seed=4), clustered(30, 16, seed=5)
    ids = np.arange(n, dtype=np.int64) + 1
    attributes = pd.DataFrame({"parity": ids % 2})
    rng = np.random.default_rng(6)
    # Every third user has seen 300-900 items (among them its exact top 10), the rest 0-10.
    exact = make_index("exact", "cosine").build(vectors, ids, attributes)
    top, _ = exact.search(queries, 50)
    exclude = []
    for row in range(len(queries)):
        many = row % 3 == 0
        seen = rng.choice(ids, size=rng.integers(300, 900) if many else rng.integers(0, 10),
                          replace=False)  # fmt: skip
        exclude.append(np.union1d(seen, top[row, :10]) if many else seen)
    where = "parity == 0" if filtered else None
    index = make_index(kind, "cosine", **THOROUGH[kind]).build(vectors, ids, attributes)
    fetched = []
    params = type(index)._search_params

    def counted(self, n_fetch, selector):
        fetched.append(n_fetch)
        return params(self, n_fetch, selector)

    monkeypatch.setattr(type(index), "_search_params", counted)
    got, scores = index.search(queries, k, exclude, where=where)
    expected, _ = exact.search(queries, k, exclude, where=where)
    assert max(fetched) <= k + 10 and len(fetched) >= 10  # each heavy row searched alone
    assert recall_at_k(got, expected) >= 0.97
    assert (got >= 0).all() and (np.diff(scores, axis=1) <= 1e-5).all()
    for row, found in enumerate(got):
        assert not set(found) & set(exclude[row].tolist())
        if filtered:
            assert (found % 2 == 0).all()
    assert faiss_index.SELECT_ABOVE < 300


@pytest.mark.parametrize("kind", list(INDEXES))
def test_bad_arguments_raise_clear_errors(kind, tmp_path):
    index = make_index(kind, "cosine")
    with pytest.raises(IndexArgumentError, match="empty"):
        index.search(np.zeros((1, 4), np.float32), 3)
    with pytest.raises(IndexArgumentError, match="empty set"):
        index.build(np.zeros((0, 4), np.float32))
    with pytest.raises(IndexArgumentError, match="nothing to save"):
        index.save(tmp_path / "x")
    index.build(clustered(50, 4, seed=11))
    with pytest.raises(IndexArgumentError, match="k must be a positive integer"):
        index.search(np.zeros((1, 4), np.float32), 0)
    with pytest.raises(IndexArgumentError, match="k must be a positive integer"):
        index.search(np.zeros((1, 4), np.float32), True)
    with pytest.raises(IndexArgumentError, match="dimension 5, the index holds dimension 4"):
        index.search(np.zeros((1, 5), np.float32), 3)
    with pytest.raises(IndexArgumentError, match="2-D"):
        index.search(np.zeros(4, np.float32), 3)
    with pytest.raises(IndexArgumentError, match="NaN"):
        index.search(np.full((1, 4), np.nan, np.float32), 3)
    with pytest.raises(IndexArgumentError, match="exclude has 2 rows for 1 queries"):
        index.search(np.zeros((1, 4), np.float32), 3, exclude=[[1], [2]])


def test_build_checks_ids():
    index = make_index("exact")
    with pytest.raises(IndexArgumentError, match="3 ids for 2 vectors"):
        index.build(np.ones((2, 3)), ids=[1, 2, 3])
    with pytest.raises(IndexArgumentError, match="unique"):
        index.build(np.ones((2, 3)), ids=[1, 1])
    with pytest.raises(IndexArgumentError, match="integers"):
        index.build(np.ones((2, 3)), ids=[0.5, 1.5])


def test_unknown_kind_and_bad_options():
    with pytest.raises(IndexArgumentError, match="unknown index 'annoyy'"):
        make_index("annoyy")
    with pytest.raises(IndexArgumentError, match=r"unknown option.*n_tres.*allowed: n_trees"):
        make_index("annoy", n_tres=3)
    with pytest.raises(IndexArgumentError, match="allowed: M, ef_construction, ef_search"):
        make_index("faiss-hnsw", nprobe=3)
    with pytest.raises(
        IndexArgumentError, match=r"annoy index option n_trees=0 must lie in \[1, 10,000\]"
    ):
        make_index("annoy", n_trees=0)
    with pytest.raises(
        IndexArgumentError, match=r"nprobe=1000000000 must lie in \[1, 16,777,216\]"
    ):
        make_index("faiss-ivf", nprobe=10**9)
    # the constructors check what they must on their own (a library caller's direct use)
    with pytest.raises(IndexArgumentError, match="n_trees must be >= 1"):
        INDEXES["annoy"](n_trees=0)
    with pytest.raises(IndexArgumentError, match="nprobe must be >= 1"):
        INDEXES["faiss-ivf"](nprobe=0)


@pytest.mark.parametrize(
    "kind,module,extra",
    [
        ("annoy", "annoy", "annoy"),
        ("faiss-hnsw", "faiss", "faiss"),
        ("milvus", "pymilvus", "milvus"),
    ],
)
def test_a_missing_package_names_the_extra_to_install(kind, module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    index = make_index(kind)  # constructing needs no package
    with pytest.raises(IndexUnavailable, match=rf"pip install 'towerkit\[{extra}\]'"):
        index.build(np.ones((3, 2)))


def test_recall_at_k_on_handmade_lists():
    exact = np.array([[1, 2, 3], [4, 5, -1]])
    approx = np.array([[3, 9, 1], [5, 4, 7]])
    # Row 0: 2 of 3 found; row 1: both real exact ids found (padding does not count).
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1.0) / 2)
    assert recall_at_k(approx, exact, k=1) == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["exact", "faiss-flat", "faiss-hnsw", "faiss-ivf"])
def test_upsert_adds_and_replaces_without_touching_the_index_it_came_from(kind, tmp_path):
    """New ids are searched, a changed id only at its new vector (and once), the attributes
    not given are kept, and the index searched before is as it was (requests in flight)."""
    import pandas as pd

    vectors = clustered(200, 8, seed=3)
    ids = np.arange(1, 201)
    attributes = pd.DataFrame({"label": ["a", "b"] * 100, "count": np.arange(200)})
    old = make_index(kind, "cosine", **THOROUGH[kind]).build(vectors, ids, attributes)
    query = vectors[:1] * -1  # far from item 1
    before = old.search(query, 5)
    new = old.upsert(np.vstack([query[0], 2 * query[0]]), [500, 1],
                     pd.DataFrame({"label": ["c", "c"]}))  # fmt: skip
    found, scores = new.search(query, 5)
    assert set(found[0, :2]) == {500, 1} and list(found[0]).count(1) == 1
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    for got, expected in zip(old.search(query, 5), before, strict=True):
        np.testing.assert_array_equal(got, expected)
    only_c, _ = new.search(query, 5, where='label == "c"')
    assert set(only_c[0, :2]) == {500, 1} and (only_c[0, 2:] == -1).all()
    rows = new.attributes.set_index(new.ids)
    assert rows.loc[1, "count"] == 0 and rows.loc[500, "count"] == 0  # kept; new: 0
    assert int((new.ids > 0).sum()) == 201
    # a missing cell keeps the known id's value; a given one replaces it
    again = new.upsert(query * 3, [1], pd.DataFrame({"label": [None], "count": [9]}))
    row = again.attributes.set_index(again.ids).loc[1]
    assert (row["label"], row["count"]) == ("c", 9)
    # saved and loaded, the replaced slot stays out of every search
    loaded = load_index(new.save(tmp_path / "index"))
    np.testing.assert_array_equal(loaded.search(query, 5)[0], found)


def test_annoy_cannot_add_and_says_to_build_anew():
    index = make_index("annoy", "cosine").build(clustered(50, 4, seed=1))
    assert not index.upserts
    with pytest.raises(IndexArgumentError, match="cannot add vectors once built"):
        index.upsert(np.ones((1, 4), np.float32), [99])


def test_upsert_refuses_what_does_not_fit():
    index = make_index("exact", "cosine").build(clustered(20, 4, seed=1), np.arange(1, 21))
    with pytest.raises(IndexArgumentError, match="dimension 3, the index holds dimension 4"):
        index.upsert(np.ones((1, 3), np.float32), [99])
    with pytest.raises(IndexArgumentError, match="unique"):
        index.upsert(np.ones((2, 4), np.float32), [99, 99])
