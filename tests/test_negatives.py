"""Negative strategies: distributions, and the candidates each strategy produces (ids, sharing,
log q, vectors). Scores and losses are the retrieval task's: tests/test_task.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerkit.data import item_counts
from towerkit.task.negatives import (
    BatchContext,
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    SampledNegatives,
)

COUNTS = np.array([0, 100, 10, 1, 0, 25])  # item ids 1..5, item 4 never seen


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


def test_sampled_candidates_are_shared_as_asked():
    sampler = CatalogueSampler.popularity(COUNTS)
    positives = torch.tensor([1, 2, 3, 5, 1])
    layout = torch.tensor([[False, True, True], [True, True, True]])  # 2 windows, 5 queries

    def draw(shared, layout=None):
        strategy = SampledNegatives(sampler, n=4, shared=shared, seed=3)
        (c,) = strategy.candidates(BatchContext(positives, None, layout))
        return c

    per_query, per_batch, per_window = draw(False), draw(True), draw(True, layout)
    assert (per_query.sharing, per_query.ids.shape) == ("query", (5, 4))
    assert (per_batch.sharing, per_batch.ids.shape) == ("batch", (4,))
    assert (per_window.sharing, per_window.ids.shape) == ("window", (2, 4))
    # Drawn from the generator, in the order the shape asks.
    want = sampler.sample((2, 4), torch.Generator().manual_seed(3))
    assert torch.equal(per_window.ids, want)
    for c in (per_query, per_batch, per_window):
        assert torch.equal(c.log_q, sampler.log_probs[c.ids]) and c.vectors is None
        assert not c.includes_positives
    with pytest.raises(ValueError, match="must be >= 1"):
        SampledNegatives(sampler, n=0)


def test_in_batch_candidates_are_the_positives_with_their_vectors():
    strategy = InBatchNegatives.from_counts(COUNTS)
    positives, vectors = torch.tensor([1, 3, 1]), torch.randn(3, 4)
    (c,) = strategy.candidates(BatchContext(positives, vectors))
    assert c.sharing == "batch" and c.includes_positives
    assert torch.equal(c.ids, positives) and c.vectors is vectors  # no second encoding
    logq = torch.log(torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32))
    assert torch.allclose(c.log_q, logq[positives])
    assert torch.allclose(strategy.log_q(torch.tensor([5])), logq[5:6])


def test_mixed_candidates_are_in_batch_then_sampled_and_positives_keep_in_batch_log_q():
    in_batch = InBatchNegatives.from_counts(COUNTS)
    sampler = CatalogueSampler.uniform(5)
    mixed = MixedNegatives(in_batch, SampledNegatives(sampler, n=7, shared=True))
    positives = torch.tensor([1, 2, 3, 4])
    first, second = mixed.candidates(BatchContext(positives, torch.randn(4, 2)))
    assert first.includes_positives and torch.equal(first.ids, positives)
    assert second.sharing == "batch" and second.ids.shape == (7,)
    assert torch.allclose(second.log_q, torch.full((7,), float(np.log(1 / 5))))
    assert torch.equal(mixed.log_q(positives), in_batch.log_q(positives))


def test_full_candidates_are_the_catalogue_without_correction():
    full = FullNegatives(5)
    (c,) = full.candidates(BatchContext(torch.tensor([2])))
    assert torch.equal(c.ids, torch.arange(1, 6)) and c.sharing == "batch"
    assert full.exhaustive and not SampledNegatives(CatalogueSampler.uniform(5), 1).exhaustive
    assert torch.equal(full.log_q(c.ids), torch.zeros(5))
