"""Multi-interest users (issue 15, first part): K query vectors per user searched and merged by
best score, with the user's exclusions applied to every interest, and evaluated exactly by the
best interest's score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerkit.evaluation import Evaluator, best_interest_scores
from towerkit.index import make_index, merge_interests
from towerkit.similarity import Cosine, Dot


def brute_force(users: np.ndarray, items: np.ndarray, k: int, exclude: list[set[int]]):
    """Per user: each item's best score over the interests (dot), excluded ids dropped."""
    scores = np.einsum("ukd,nd->ukn", users, items).max(1)  # (U, N); item id = column + 1
    out = []
    for row, banned in zip(scores, exclude, strict=True):
        ranked = [i + 1 for i in np.argsort(-row, kind="stable") if i + 1 not in banned]
        out.append(ranked[:k])
    return np.array(out)


def test_merge_keeps_each_id_once_at_its_best_score():
    # user 0: interest 0 finds 5 (0.9), 7 (0.4); interest 1 finds 7 (0.8), 5 (0.1), 2 (0.3)
    ids = np.array([[5, 7, -1], [7, 2, 5], [1, 2, 3], [3, 2, 1]])
    scores = np.array([[0.9, 0.4, -np.inf], [0.8, 0.3, 0.1], [3, 2, 1], [3, 2, 1]], dtype=float)
    merged_ids, merged_scores = merge_interests(ids, scores, interests=2, k=4)
    assert merged_ids.tolist() == [[5, 7, 2, -1], [1, 3, 2, -1]]
    assert merged_scores[0, :3].tolist() == pytest.approx([0.9, 0.8, 0.3])
    assert merged_scores[0, 3] == -np.inf
    # ties keep interest order: user 1's 1 (interest 0) before 3 (interest 1), both 3.0
    assert merged_scores[1].tolist()[:3] == [3.0, 3.0, 2.0]


def test_merge_equals_a_python_reference_on_random_lists():
    rng = np.random.default_rng(0)
    users, interests, width, k = 40, 3, 6, 5
    ids = rng.integers(-1, 12, (users * interests, width))
    scores = rng.normal(size=ids.shape)
    got_ids, got_scores = merge_interests(ids, scores, interests, k)
    for u in range(users):
        best = {}
        for row in range(u * interests, (u + 1) * interests):
            for i, s in zip(ids[row], scores[row], strict=True):
                if i >= 0 and s > best.get(i, -np.inf):
                    best[i] = s
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        assert got_ids[u, : len(ranked)].tolist() == [i for i, _ in ranked]
        assert got_scores[u, : len(ranked)] == pytest.approx([s for _, s in ranked], rel=1e-6)
        assert (got_ids[u, len(ranked) :] == -1).all()


@pytest.mark.parametrize("kind", ["exact", "faiss-flat"])
def test_search_multi_is_the_best_interest_ranking_with_exclusions_once_per_user(kind):
    rng = np.random.default_rng(1)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    users = rng.normal(size=(20, 4, 8)).astype(np.float32)
    exclude = [set(rng.choice(np.arange(1, 51), 5, replace=False).tolist()) for _ in range(20)]
    index = make_index(kind, Dot()).build(items, ids=np.arange(1, 51))
    ids, _ = index.search_multi(users, 10, exclude=[sorted(e) for e in exclude])
    assert np.array_equal(ids, brute_force(users, items, 10, exclude))
    for row, banned in zip(ids, exclude, strict=True):
        assert not banned & set(row.tolist())  # no interest brought an excluded item back


def test_one_interest_is_a_single_vector_search():
    rng = np.random.default_rng(2)
    items = rng.normal(size=(30, 6)).astype(np.float32)
    users = rng.normal(size=(10, 6)).astype(np.float32)
    index = make_index("exact", Cosine()).build(items, ids=np.arange(1, 31))
    exclude = [[1, 2, 3]] * 10
    single = index.search(users, 7, exclude=exclude)
    multi = index.search_multi(users[:, None, :], 7, exclude=exclude)
    assert np.array_equal(single[0], multi[0])
    assert np.allclose(single[1], multi[1])


def test_the_evaluator_ranks_multi_interest_users_by_their_best_interest():
    from test_evaluation import random_split

    enc, split = random_split(n_users=60, n_items=40)
    g = torch.Generator().manual_seed(3)
    users = torch.randn(enc.n_users, 3, 8, generator=g)
    items = torch.randn(enc.n_items, 8, generator=g)
    evaluator = Evaluator(split, "test", enc.n_items, ks=(5, 10), max_bytes=1 << 16)
    metrics = evaluator.evaluate_vectors(users, items, Dot())
    # The same as a single-vector evaluation of precomputed best-interest scores.
    best = best_interest_scores(users, items, Dot())
    assert torch.equal(best, torch.einsum("ukd,nd->ukn", users, items).amax(1))
    expected = evaluator._metrics(lambda b, e: best[b:e])
    assert metrics == pytest.approx(expected)
    # K = 1 is the single-vector evaluation; an index ranks as exact search does.
    assert evaluator.evaluate_vectors(users[:, :1], items, Dot()) == pytest.approx(
        evaluator.evaluate_vectors(users[:, 0], items, Dot())
    )
    flat = evaluator.evaluate_index(users, items, Dot(), "faiss-flat")
    assert flat["index_recall@10"] == 1.0
    assert flat["hr@10"] == pytest.approx(metrics["hr@10"])
