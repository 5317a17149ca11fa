"""The retrieval task against losses computed by hand: scale -> log-q -> mask -> objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from towerkit.similarity import Cosine, Dot, Euclidean, Temperature
from towerkit.task import RetrievalTask
from towerkit.task.negatives import (
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    SampledNegatives,
)
from towerkit.task.objectives import listwise
from towerkit.types import Seen, TrainingPairs

# Items 1 and 2 are the unit vectors; item 3 is (1, 1). Row 0 is padding.
TABLE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def encode(ids: torch.Tensor) -> torch.Tensor:
    return TABLE[ids]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_sampled_listwise_by_hand():
    # A sampler that only ever draws item 3. Temperature 0.5 doubles every score.
    only_3 = CatalogueSampler(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    task = RetrievalTask(encode, negatives=SampledNegatives(only_3, n=2), similarity=Dot(),
                         temperature=0.5, mode="listwise")  # fmt: skip
    queries = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # logits: query 0: pos q.i1 = 2 -> 4, negatives q.i3 = 2 -> (4, 4)
    #         query 1: pos q.i2 = 1 -> 2, negatives q.i3 = 1 -> (2, 2)
    # loss per query: softplus(logsumexp(neg) - pos) = softplus(log 2) = log 3
    loss = task.loss(TrainingPairs(queries, torch.tensor([1, 2])))
    assert loss.item() == pytest.approx(math.log(3), abs=1e-6)


def in_batch_task(**kwargs) -> RetrievalTask:
    # Items 1 and 2 were seen 3 and 1 times: in-batch log q = log 0.75 and log 0.25.
    negatives = InBatchNegatives.from_counts(np.array([0, 3, 1, 0]))
    return RetrievalTask(encode, negatives=negatives, similarity=Dot(), **kwargs)


IN_BATCH_QUERIES = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
IN_BATCH_POSITIVES = torch.tensor([1, 2, 1])  # item 1 twice: an accidental hit for rows 0 and 2
# Scores q . v of every query against the batch's positives (items 1, 2, 1):
#   row 0: [1, 0, 1]   row 1: [0, 2, 0]   row 2: [3, 0, 3]


def test_in_batch_with_log_q_and_accidental_hits_by_hand():
    loss = in_batch_task(logq=True).loss(TrainingPairs(IN_BATCH_QUERIES, IN_BATCH_POSITIVES))
    a, b = math.log(0.75), math.log(0.25)
    # Every logit loses its item's log q. Row 0 keeps column 1 only (columns 0 and 2 are item
    # 1, its positive): softplus((0 - b) - (1 - a)). Row 1 keeps columns 0 and 2:
    # softplus(logsumexp(-a, -a) - (2 - b)). Row 2 keeps column 1: softplus(-b - (3 - a)).
    rows = [
        softplus(-b - (1 - a)),
        softplus(-a + math.log(2) - (2 - b)),
        softplus(-b - (3 - a)),
    ]
    assert loss.item() == pytest.approx(np.mean(rows), abs=1e-6)
    plain = in_batch_task(logq=False).loss(TrainingPairs(IN_BATCH_QUERIES, IN_BATCH_POSITIVES))
    plain_rows = [softplus(0 - 1), softplus(math.log(2) - 2), softplus(0 - 3)]
    assert plain.item() == pytest.approx(np.mean(plain_rows), abs=1e-6)


def test_scale_comes_before_log_q():
    # At temperature 0.5 the scores double and log q is subtracted after: s / t - log q.
    loss = in_batch_task(logq=True, temperature=0.5).loss(
        TrainingPairs(IN_BATCH_QUERIES, IN_BATCH_POSITIVES)
    )
    a, b = math.log(0.75), math.log(0.25)
    rows = [
        softplus(-b - (2 - a)),
        softplus(-a + math.log(2) - (4 - b)),
        softplus(-b - (6 - a)),
    ]
    assert loss.item() == pytest.approx(np.mean(rows), abs=1e-6)


def test_without_hit_masking_only_the_own_column_is_left_out():
    loss = in_batch_task(mask_hits=False).loss(TrainingPairs(IN_BATCH_QUERIES, IN_BATCH_POSITIVES))
    # Row 0 keeps columns 1 and 2 (scores 0 and 1: the duplicate of its positive counts now),
    # row 1 keeps 0 and 2 (0, 0), row 2 keeps 0 and 1 (3, 0).
    rows = [
        softplus(math.log(math.exp(0) + math.exp(1)) - 1),
        softplus(math.log(2) - 2),
        softplus(math.log(math.exp(3) + 1) - 3),
    ]
    assert loss.item() == pytest.approx(np.mean(rows), abs=1e-6)


def test_pointwise_and_pairwise_over_the_catalogue_by_hand():
    queries, positives = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    # Scores against items 1, 2, 3: (1, 0, 1); item 1 is the positive, so negatives 2 and 3.
    point = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot(), mode=0)
    want = (softplus(-1) + softplus(0) + softplus(1)) / 3  # BCE over 1 positive, 2 negatives
    assert point.loss(TrainingPairs(queries, positives)).item() == pytest.approx(want, abs=1e-6)
    pair = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot(), mode="pairwise")
    want = (softplus(-(1 - 0)) + softplus(-(1 - 1))) / 2  # BPR over the 2 kept pairs
    assert pair.loss(TrainingPairs(queries, positives)).item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("similarity", [Dot(), Cosine(), Euclidean()], ids=str)
def test_fused_full_softmax_equals_the_masked_listwise_loss(similarity):
    torch.manual_seed(0)
    table = torch.randn(13, 6, requires_grad=True)
    queries, positives = torch.randn(9, 6), torch.randint(1, 13, (9,))
    task = RetrievalTask(lambda ids: table[ids], negatives=FullNegatives(12),
                         similarity=similarity, temperature=0.3)  # fmt: skip
    assert task.fused
    fused = task.loss(TrainingPairs(queries, positives))
    scores = similarity.pairwise(queries, table[1:]) / 0.3  # (9, 12)
    pos = scores.gather(1, (positives - 1)[:, None]).squeeze(1)
    mask = torch.arange(1, 13)[None, :] != positives[:, None]
    reference = listwise(pos, scores, mask=mask)
    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(fused, F.cross_entropy(scores, positives - 1))
    (g1,) = torch.autograd.grad(reference, table)
    (g2,) = torch.autograd.grad(fused, table)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("similarity", [Dot(), Cosine(), Euclidean()], ids=str)
def test_window_shared_candidates_score_each_query_against_its_windows_set(similarity):
    table = torch.randn(51, 4, generator=torch.Generator().manual_seed(0))
    sampler = CatalogueSampler.popularity(np.arange(51))
    layout = torch.tensor([[False, True, True, True], [False, False, True, True]])  # 5 queries
    queries, positives = torch.randn(5, 4), torch.tensor([3, 4, 5, 7, 8])
    task = RetrievalTask(lambda ids: table[ids],
                         negatives=SampledNegatives(sampler, n=6, shared=True, seed=2),
                         similarity=similarity, temperature=0.5, logq=True)  # fmt: skip
    loss = task.loss(TrainingPairs(queries, positives, layout))
    ids = sampler.sample((2, 6), torch.Generator().manual_seed(2))  # one draw per window
    assert not torch.equal(ids[0], ids[1])
    rows = ids[[0, 0, 0, 1, 1]]  # the window of each query
    logq = sampler.log_probs
    neg = similarity.rowwise(queries, table[rows], 2.0) - logq[rows]
    pos = similarity.rowwise(queries, table[positives], 2.0) - logq[positives]
    torch.testing.assert_close(loss, listwise(pos, neg, mask=rows != positives[:, None]))


def test_mixed_concatenates_in_batch_and_sampled_logits():
    only_3 = CatalogueSampler(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    in_batch = InBatchNegatives.from_counts(np.array([0, 3, 1, 0]))
    task = RetrievalTask(encode, negatives=MixedNegatives(in_batch, SampledNegatives(only_3, 1)),
                         similarity=Dot(), logq=False)  # fmt: skip
    loss = task.loss(TrainingPairs(IN_BATCH_QUERIES, IN_BATCH_POSITIVES))
    # In-batch columns as in the plain in-batch case, plus item 3: scores 1, 2, 3 per row.
    rows = [
        softplus(math.log(math.exp(0) + math.exp(1)) - 1),
        softplus(math.log(2 + math.exp(2)) - 2),
        softplus(math.log(math.exp(0) + math.exp(3)) - 3),
    ]
    assert loss.item() == pytest.approx(np.mean(rows), abs=1e-6)


def test_temperature_is_applied_learned_and_checked():
    """The pitfall of the library our users come from: a temperature that is never used."""
    queries, positives = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    hot = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot(), temperature=1.0)
    cold = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot(), temperature=0.1)
    # Logits (1, 0, 1) against (10, 0, 10): log(1 + e^-1 + 1) vs log(1 + e^-10 + 1).
    assert hot.loss(TrainingPairs(queries, positives)).item() == pytest.approx(
        math.log(2 + math.exp(-1))
    )
    assert cold.loss(TrainingPairs(queries, positives)).item() == pytest.approx(
        math.log(2 + math.exp(-10))
    )
    learned = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot(),
                            temperature=Temperature(0.5, learnable=True))  # fmt: skip
    learned.loss(TrainingPairs(queries, positives)).backward()
    assert learned.temperature.log_value.grad.abs() > 0
    assert [p is learned.temperature.log_value for p in learned.parameters()] == [True]
    with pytest.raises(ValueError, match="full softmax samples none"):
        RetrievalTask(encode, negatives=FullNegatives(3), logq=True)


def test_exclude_seen_drops_the_history_from_the_full_softmax_but_keeps_the_positive():
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([1, 2])
    # Query 0 has seen items 2 and 3; query 1 has seen its own positive (a repeat) and 1.
    seen = torch.tensor([[2, 3, 0], [2, 1, 0]])
    task = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot(), seen=True)
    # Scores vs items 1, 2, 3: query 0 (1, 0, 1) keeps only item 1: loss 0.
    # Query 1 (0, 2, 2) keeps items 2 (its positive) and 3: log(e^2 + e^2) - 2 = log 2.
    assert task.loss(TrainingPairs(queries, positives, seen=Seen(seen))).item() == pytest.approx(
        math.log(2) / 2
    )
    with pytest.raises(ValueError, match="seen"):
        task.loss(TrainingPairs(queries, positives))
    plain = RetrievalTask(encode, negatives=FullNegatives(3), similarity=Dot())
    assert plain.loss(TrainingPairs(queries, positives, seen=Seen(seen))) == plain.loss(
        TrainingPairs(queries, positives)
    )


def test_exclude_seen_masks_sampled_and_in_batch_candidates_the_query_has_seen():
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    seen = torch.tensor([[2, 0], [3, 1], [0, 0]])
    only_3 = CatalogueSampler(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    task = RetrievalTask(encode, negatives=MixedNegatives(
        InBatchNegatives.from_counts(np.array([0, 1, 1, 1])), SampledNegatives(only_3, n=1)),
        similarity=Dot(), logq=False, seen=True)  # fmt: skip
    positives = torch.tensor([1, 2, 3])
    # Candidates: in-batch (1, 2, 3) then the sampled item 3; accidental hits are masked.
    #   query 0 (pos 1, seen 2): keeps 3 (in-batch) and 3 (sampled), scores (1, 1), pos 1
    #   query 1 (pos 2, seen 3 and 1): keeps nothing -> loss 0
    #   query 2 (pos 3, seen none): keeps 1 and 2, scores (3, 0), pos 3
    rows = [
        softplus(math.log(2 * math.exp(1)) - 1),
        0.0,
        softplus(math.log(math.exp(3) + math.exp(0)) - 3),
    ]
    assert task.loss(TrainingPairs(queries, positives, seen=Seen(seen))).item() == pytest.approx(
        np.mean(rows)
    )


@pytest.mark.parametrize("kind", ["full", "sampled"])
def test_items_seen_before_a_window_are_excluded_for_each_of_its_queries(kind):
    """``Seen.before``: a window's earlier items count as seen by every query of the window,
    exactly as if each query listed them itself."""
    torch.manual_seed(0)
    table = torch.randn(9, 4)
    queries, positives = torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 5])
    items = torch.tensor([[6, 0], [6, 7], [0, 0], [8, 0], [8, 2]])
    before = torch.tensor([[0, 3, 2], [5, 4, 1]])  # window 0: 3, 2; window 1: 5, 4, 1
    window = torch.tensor([0, 0, 1, 1, 1])
    if kind == "full":
        negatives = FullNegatives(8)
    else:
        negatives = SampledNegatives(CatalogueSampler.uniform(8), n=6, seed=3)
    task = RetrievalTask(lambda ids: table[ids], negatives=negatives, similarity=Dot(),
                         logq=False, seen=True)  # fmt: skip
    got = task.loss(TrainingPairs(queries, positives, seen=Seen(items, before, window)))
    flat = torch.cat([items, before[window]], 1)  # each query's own full list
    task.negatives.manual_seed(3)
    want = task.loss(TrainingPairs(queries, positives, seen=Seen(flat)))
    torch.testing.assert_close(got, want)
    task.negatives.manual_seed(3)
    assert not torch.allclose(got, task.loss(TrainingPairs(queries, positives, seen=Seen(items))))
