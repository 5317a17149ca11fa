"""Metrics on handmade rankings, exact top-K against an argsort oracle, masking of seen items."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from towerkit.data import Interactions, Sequences, encode, leave_one_out
from towerkit.evaluation import Evaluator, Queries, query_vectors, ranking_metrics
from towerkit.index.exact import chunked_topk
from towerkit.similarity import Cosine, Dot


def test_metrics_on_a_handmade_ranking():
    # user 0: target 1 at rank 2; user 1: target 4 not in the list.
    topk = np.array([[3, 1, 2], [2, 3, 1]])
    m = ranking_metrics(topk, np.array([0, 1, 2]), np.array([1, 4]), n_items=4, ks=(1, 2, 3))
    assert m["hr@1"] == 0.0
    assert m["hr@2"] == 0.5 and m["recall@2"] == 0.5
    assert m["ndcg@2"] == pytest.approx(0.5 / np.log2(3))  # (1/log2(3) + 0) / 2
    assert m["mrr@2"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert m["precision@2"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert m["coverage@1"] == 0.5 and m["coverage@3"] == 0.75  # {3, 2} and {1, 2, 3} of 4


def test_metrics_with_several_targets():
    topk = np.array([[1, 5, 2]])
    m = ranking_metrics(topk, np.array([0, 2]), np.array([2, 1]), n_items=5, ks=(3,))
    assert m["recall@3"] == 1.0 and m["mrr@3"] == 1.0
    assert m["precision@3"] == pytest.approx(2 / 3)
    # DCG = 1 + 1/log2(4); ideal = 1 + 1/log2(3).
    assert m["ndcg@3"] == pytest.approx(1.5 / (1 + 1 / np.log2(3)))
    with pytest.raises(ValueError, match="width 3 cannot give metrics at K=10"):
        ranking_metrics(topk, np.array([0, 2]), np.array([2, 1]), n_items=5, ks=(10,))


@pytest.mark.parametrize(("n_queries", "n_items", "k"), [(1, 5, 1), (37, 50, 7), (100, 20, 20)])
def test_chunked_topk_equals_argsort_oracle(n_queries, n_items, k):
    rng = np.random.default_rng(n_items)
    scores = rng.standard_normal((n_queries, n_items)).astype(np.float32)
    lengths = rng.integers(0, n_items // 2, n_queries)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    excluded = np.concatenate(
        [rng.choice(n_items, size=n, replace=False) + 1 for n in lengths] or [np.zeros(0, int)]
    ).astype(np.int64)
    ids, top = chunked_topk(
        lambda a, b: torch.from_numpy(scores[a:b]),
        n_queries,
        n_items,
        k,
        exclude=(indptr, excluded),
        max_bytes=4 * n_items * 3,  # three rows per chunk
    )
    for q in range(n_queries):
        masked = scores[q].copy()
        masked[excluded[indptr[q] : indptr[q + 1]] - 1] = -np.inf
        oracle = np.argsort(-masked, kind="stable")[:k] + 1
        finite = np.isfinite(masked[oracle - 1])  # beyond the unmasked items, order is moot
        assert ids[q][finite].tolist() == oracle[finite].tolist()
        assert np.allclose(top[q], masked[oracle - 1])
        assert not np.isin(ids[q][finite], excluded[indptr[q] : indptr[q + 1]]).any()
    with pytest.raises(ValueError, match="k must be >= 1"):
        chunked_topk(lambda a, b: torch.zeros(b - a, 3), 2, 3, 0)


class FixedModel(torch.nn.Module):
    """Users and items as fixed vectors: user u prefers item ids in a known order."""

    n_interests = None  # one vector per user (the model protocol's declaration)

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.users, self.items = users, items

    def encode_users(self, batch):
        return self.users[batch.users]

    def encode_items(self, ids):
        return self.items[ids]


def tiny_split():
    # user a: 10, 20, 30, 40 (test 40, valid 30); user b: 20, 10, 30 (test 30, valid 10).
    frame = pd.DataFrame(
        {
            "user": ["a", "a", "a", "a", "b", "b", "b"],
            "item": [10, 20, 30, 40, 20, 10, 30],
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
        }
    )
    enc = encode(Interactions(frame))
    return enc, leave_one_out(Sequences.from_encoded(enc))


def test_evaluator_masks_history_and_scores_exactly():
    _, split = tiny_split()
    queries = Queries.from_split(split, "test")
    assert queries.users.tolist() == [1, 2]
    indptr, seen = queries.exclusions(split.sequences.items)
    # Item ids by first appearance: 10 -> 1, 20 -> 2, 30 -> 3, 40 -> 4.
    assert seen[indptr[0] : indptr[1]].tolist() == [1, 2, 3]  # a saw 10, 20, 30 before 40
    assert seen[indptr[1] : indptr[2]].tolist() == [2, 1]  # b saw 20, 10 before 30
    # Everyone prefers items 1 > 2 > 3 > 4 (score = -id); masking leaves the targets on top.
    items = torch.tensor([[0.0], [-1.0], [-2.0], [-3.0], [-4.0]])
    model = FixedModel(torch.ones(3, 1), items)
    evaluator = Evaluator(split, "test", n_items=4, ks=(1, 2))
    m = evaluator.evaluate(model, Dot())
    assert m["hr@1"] == 1.0 and m["ndcg@1"] == 1.0 and m["mrr@2"] == 1.0
    # Without masking, seen items 1 and 2 would have been ranked first.
    unmasked = chunked_topk(lambda a, b: -torch.arange(1.0, 5.0).expand(b - a, 4), 2, 4, 1)[0]
    assert unmasked.tolist() == [[1], [1]]


def test_unmasked_evaluation_ranks_seen_items_too():
    """``mask_seen=False`` (ComiRec's protocol): the seen items 1 and 2 take the top ranks."""
    _, split = tiny_split()
    items = torch.tensor([[0.0], [-1.0], [-2.0], [-3.0], [-4.0]])
    model = FixedModel(torch.ones(3, 1), items)
    evaluator = Evaluator(split, "test", n_items=4, ks=(1, 3), mask_seen=False)
    m = evaluator.evaluate(model, Dot())
    # a's target 40 ranks 4th, b's target 30 ranks 3rd: no hit at 1, b's hit at 3.
    assert m["hr@1"] == 0.0 and m["hr@3"] == 0.5
    assert m["ndcg@3"] == pytest.approx(0.5 / math.log2(4))
    popularity = Evaluator(split, "test", n_items=4, ks=(1,), mask_seen=False)
    assert popularity.evaluate_popularity()["hr@1"] == 0.0  # 20, seen and most popular, is 1st


def test_popularity_baseline_by_hand():
    _, split = tiny_split()
    # Training: a -> 10, 20; b -> 20. Counts: 20 twice, 10 once, 30 and 40 never.
    valid = Evaluator(split, "valid", n_items=4, ks=(1, 2))
    m = valid.evaluate_popularity()
    # Valid targets: a -> 30 (seen 10, 20 masked; ranks 30 then 40: hit @1);
    # b -> 10 (seen 20 masked; 10 is next most popular: hit @1).
    assert m["hr@1"] == 1.0
    test = Evaluator(split, "test", n_items=4, ks=(1, 2)).evaluate_popularity()
    # a -> 40 (10, 20, 30 masked: only 40 left, rank 1); b -> 30 (20, 10 masked; 30 before 40).
    assert test["hr@1"] == 1.0


def random_vectors(enc, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``[n_users, 8]`` user and ``[n_items, 8]`` item vectors."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(enc.n_users, 8, generator=g), torch.randn(enc.n_items, 8, generator=g)


def random_split(n_users=80, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "user": np.repeat(np.arange(n_users), 12),
        "item": rng.integers(0, n_items, n_users * 12),
        "timestamp": np.tile(np.arange(12), n_users),
    })  # fmt: skip
    enc = encode(Interactions(frame))
    return enc, leave_one_out(Sequences.from_encoded(enc))


def test_evaluate_index_matches_exact_ranking_and_reports_its_recall():
    enc, split = random_split()
    users, items = random_vectors(enc, seed=0)
    evaluator = Evaluator(split, "test", enc.n_items, ks=(5, 10))
    exact = evaluator.evaluate_vectors(users, items, Cosine())
    through_flat = evaluator.evaluate_index(users, items, Cosine(), "faiss-flat")
    for key, value in exact.items():
        assert through_flat[key] == pytest.approx(value, abs=1e-9), key
    assert through_flat["index_recall@5"] == through_flat["index_recall@10"] == 1.0
    # A coarse Annoy forest misses some of the exact top-K, and says how much.
    coarse = evaluator.evaluate_index(users, items, Cosine(), "annoy", n_trees=1, search_k=1)
    assert 0 < coarse["index_recall@10"] < 1
    measured = {
        f"{name}@{k}" for name in ("index_recall", "exact_hr", "exact_ndcg") for k in (5, 10)
    }
    assert set(coarse) == set(exact) | measured
    # ... and what it costs: the exact ranking's HR and NDCG beside its own
    assert coarse["exact_hr@10"] == exact["hr@10"] and coarse["exact_ndcg@5"] == exact["ndcg@5"]
    assert coarse["hr@10"] <= coarse["exact_hr@10"] + 0.05


def test_an_evaluator_built_with_an_index_ranks_through_it():
    enc, split = random_split()
    users, items = random_vectors(enc, seed=1)
    coarse = Evaluator(split, "valid", enc.n_items, index="annoy",
                       index_options={"n_trees": 1, "search_k": 1})  # fmt: skip
    metrics = coarse.evaluate_vectors(users, items, Dot())
    assert "index_recall@10" in metrics and metrics["index_recall@10"] < 1


def test_query_vectors_read_each_users_history_up_to_its_end():
    class LastItem(torch.nn.Module):
        embedding_dim = 1
        n_interests = None

        def encode_users(self, batch):
            return batch.history[:, -1:].float()  # the most recent history item

    items = np.array([5, 6, 7, 8, 9])
    vectors = query_vectors(LastItem(), items, np.array([1, 2, 3]), np.array([0, 2, 4]),
                            np.array([2, 4, 4]), max_len=3, batch_size=2)  # fmt: skip
    assert vectors[:, 0].tolist() == [6.0, 8.0, 0.0]  # the third history is empty: padding


def test_a_seeded_sample_of_users_ranks_exactly_those_users():
    """eval.sample_users: the sample's metrics are the full ranking's, restricted to the
    sampled users; the same seed picks the same users."""
    enc, split = random_split(n_users=80)
    users, items = random_vectors(enc, seed=2)
    full = Evaluator(split, "test", enc.n_items, ks=(5, 10))
    sampled = Evaluator(split, "test", enc.n_items, ks=(5, 10), sample_users=25, sample_seed=3)
    assert len(sampled.queries) == 25
    assert np.array_equal(sampled.queries.users, full.queries.sample(25, 3).users)
    assert not np.array_equal(sampled.queries.users, full.queries.sample(25, 4).users)
    assert len(Evaluator(split, "test", enc.n_items, sample_users=500).queries) == 80

    keep = np.searchsorted(full.queries.users, sampled.queries.users)
    scores = Cosine().pairwise(users[full.queries.users - 1], items)
    ids, _ = chunked_topk(lambda b, e: scores[b:e], len(full.queries), enc.n_items, 10,
                          full.exclude)  # fmt: skip
    q = full.queries
    expected = ranking_metrics(
        ids[keep], np.r_[0, np.cumsum(np.diff(q.target_offsets)[keep])],
        np.concatenate([q.target_items[q.target_offsets[i]:q.target_offsets[i + 1]] for i in keep]),
        enc.n_items, (5, 10),
    )  # fmt: skip
    got = sampled.evaluate_vectors(users[sampled.queries.users - 1], items, Cosine())
    assert got == pytest.approx(expected)
