"""Negative strategies: distributions, accidental-hit masking, log-q correction, full softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from towerkit.negatives import (
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    SampledNegatives,
    item_counts,
)
from towerkit.objectives import listwise
from towerkit.similarity import Cosine, Dot, Euclidean, Temperature

COUNTS = np.array([0, 100, 10, 1, 0, 25])  # item ids 1..5, item 4 never seen


def table_encoder(n_items: int = 5, dim: int = 4, seed: int = 0):
    table = torch.randn(n_items + 1, dim, generator=torch.Generator().manual_seed(seed))
    return table, lambda ids: table[ids]


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        (CatalogueSampler.uniform(5), np.array([0, 1, 1, 1, 1, 1]) / 5),
        (CatalogueSampler.popularity(COUNTS, 0.75), COUNTS**0.75 / (COUNTS**0.75).sum()),
        (CatalogueSampler.popularity(COUNTS, 1.0), COUNTS / COUNTS.sum()),
        (CatalogueSampler.log_popularity(COUNTS), np.log1p(COUNTS) / np.log1p(COUNTS).sum()),
    ],
    ids=["uniform", "popularity^0.75", "popularity", "log-popularity"],
)
def test_samplers_draw_their_distribution(sampler, expected):
    draws = sampler.sample((200_000,), torch.Generator().manual_seed(0)).numpy()
    freq = np.bincount(draws, minlength=6) / len(draws)
    assert freq[0] == 0  # never the padding id
    assert np.allclose(freq, expected, atol=4e-3)
    assert np.allclose(sampler.probs.numpy(), expected, atol=1e-6)


def test_sampler_is_seeded_and_validated():
    s = CatalogueSampler.popularity(COUNTS)
    a = s.sample((3, 4), torch.Generator().manual_seed(1))
    b = s.sample((3, 4), torch.Generator().manual_seed(1))
    assert a.shape == (3, 4) and torch.equal(a, b)
    with pytest.raises(ValueError, match="probs"):
        CatalogueSampler(torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown sampler 'zipf'"):
        CatalogueSampler.build("zipf", COUNTS)
    assert item_counts(np.array([1, 1, 3]), 4).tolist() == [0, 2, 0, 1, 0]


def test_sampled_negatives_mask_the_positive():
    """The pitfall: a negative equal to the positive must not count."""
    _, encode = table_encoder()
    only_item_2 = CatalogueSampler(torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    strategy = SampledNegatives(only_item_2, n=3)
    positives = torch.tensor([2, 5])
    _, neg, mask = strategy.logits(torch.randn(2, 4), positives, encode, Dot(), Temperature(1))
    assert neg.shape == mask.shape == (2, 3)
    assert mask.tolist() == [[False] * 3, [True] * 3]


@pytest.mark.parametrize("shared", [False, True])
def test_sampled_logits_by_hand(shared):
    table, encode = table_encoder()
    sampler = CatalogueSampler.popularity(COUNTS)
    queries, positives = torch.randn(3, 4), torch.tensor([1, 2, 3])
    gen = torch.Generator().manual_seed(5)
    strategy = SampledNegatives(sampler, n=6, shared=shared, logq=True)
    pos, neg, mask = strategy.logits(queries, positives, encode, Dot(), Temperature(0.5), gen)
    ids = sampler.sample((6,) if shared else (3, 6), torch.Generator().manual_seed(5))
    ids = ids.expand(3, 6) if shared else ids
    logq = sampler.log_probs
    want_pos = (queries * table[positives]).sum(1) / 0.5 - logq[positives]
    want_neg = torch.einsum("bd,bkd->bk", queries, table[ids]) / 0.5 - logq[ids]
    assert torch.allclose(pos, want_pos, atol=1e-5) and torch.allclose(neg, want_neg, atol=1e-5)
    assert torch.equal(mask, ids != positives[:, None])
    with pytest.raises(ValueError, match="must be >= 1"):
        SampledNegatives(sampler, n=0)


@pytest.mark.parametrize("similarity", [Dot(), Cosine(), Euclidean(normalize=False)], ids=str)
def test_shared_negatives_of_a_sequence_batch_are_drawn_per_sequence(similarity):
    """With a layout, each sequence draws its own n negatives, shared by its positions."""
    table, encode = table_encoder(n_items=50)
    sampler = CatalogueSampler.popularity(np.arange(51))
    layout = torch.tensor([[False, True, True, True], [False, False, True, True]])  # 5 queries
    queries, positives = torch.randn(5, 4), torch.tensor([3, 4, 5, 7, 8])
    strategy = SampledNegatives(sampler, n=6, shared=True, logq=True)
    gen = torch.Generator().manual_seed(2)
    pos, neg, mask = strategy.logits(
        queries, positives, encode, similarity, Temperature(0.5), gen, layout
    )
    ids = sampler.sample((2, 6), torch.Generator().manual_seed(2))  # one draw per sequence
    rows = ids[[0, 0, 0, 1, 1]]  # the sequence of each query
    logq = sampler.log_probs
    want_neg = similarity.rowwise(queries, table[rows], 2.0) - logq[rows]
    want_pos = similarity.rowwise(queries, table[positives], 2.0) - logq[positives]
    assert torch.allclose(neg, want_neg, atol=1e-5) and torch.allclose(pos, want_pos, atol=1e-5)
    assert torch.equal(mask, rows != positives[:, None])
    assert not torch.equal(ids[0], ids[1])


def test_in_batch_masks_duplicates_and_corrects_log_q():
    table, encode = table_encoder()
    queries = torch.randn(4, 4)
    positives = torch.tensor([1, 3, 1, 5])  # item 1 twice: an accidental hit for rows 0 and 2
    plain = InBatchNegatives.from_counts(COUNTS, logq=False)
    pos, neg, mask = plain.logits(queries, positives, encode, Dot(), Temperature(1))
    raw = queries @ table[positives].T
    assert torch.allclose(neg, raw) and torch.allclose(pos, raw.diagonal())
    assert mask.tolist() == [
        [False, True, False, True],
        [True, False, True, True],
        [False, True, False, True],
        [True, True, True, False],
    ]
    corrected = InBatchNegatives.from_counts(COUNTS, logq=True)
    pos_c, neg_c, _ = corrected.logits(queries, positives, encode, Dot(), Temperature(1))
    logq = torch.log(torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32))[positives]
    assert torch.allclose(neg_c, raw - logq[None, :])
    assert torch.allclose(pos_c, raw.diagonal() - logq)
    # Popular item 1 (log q high) is pushed less as a negative after correction.
    assert (neg_c[:, 0] > neg[:, 0]).all()


def test_full_softmax_equals_cross_entropy_over_the_catalogue():
    table, encode = table_encoder()
    queries, positives = torch.randn(3, 4), torch.tensor([2, 5, 1])
    temperature = Temperature(0.1)
    pos, neg, mask = FullNegatives(5).logits(queries, positives, encode, Cosine(), temperature)
    assert neg.shape == (3, 5) and (~mask).sum(1).tolist() == [1, 1, 1]
    logits = Cosine().pairwise(queries, table[1:]) / 0.1
    assert torch.allclose(listwise(pos, neg, mask=mask), F.cross_entropy(logits, positives - 1))


def test_mixed_concatenates_in_batch_and_sampled():
    _, encode = table_encoder()
    strategy = MixedNegatives(
        InBatchNegatives(), SampledNegatives(CatalogueSampler.uniform(5), n=7)
    )
    pos, neg, mask = strategy.logits(
        torch.randn(4, 4), torch.tensor([1, 2, 3, 4]), encode, Dot(), Temperature(1)
    )
    assert pos.shape == (4,) and neg.shape == mask.shape == (4, 4 + 7)


def test_full_softmax_fast_path_equals_the_listwise_objective():
    from towerkit.objectives import listwise
    from towerkit.similarity import Dot, Temperature

    torch.manual_seed(0)
    table = torch.randn(13, 6, requires_grad=True)
    queries = torch.randn(9, 6)
    positives = torch.randint(1, 13, (9,))
    full = FullNegatives(12)
    encode = lambda ids: table[ids]  # noqa: E731
    pos, neg, mask = full.logits(queries, positives, encode, Dot(), Temperature(0.3))
    reference = listwise(pos, neg, mask=mask)
    fused = full.softmax_loss(queries, positives, encode, Dot(), Temperature(0.3))
    torch.testing.assert_close(fused, reference)
    (g1,) = torch.autograd.grad(reference, table)
    (g2,) = torch.autograd.grad(fused, table)
    torch.testing.assert_close(g1, g2)
