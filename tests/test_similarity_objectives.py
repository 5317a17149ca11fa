"""Similarities, temperature and the three objectives, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from towerkit.similarity import Cosine, Dot, Euclidean, Temperature, get_similarity, l2_normalize
from towerkit.task.objectives import Mode, get_objective, listwise, pairwise, parse_mode, pointwise


def test_scores_by_hand():
    u = torch.tensor([[3.0, 4.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert Dot().pairwise(u, v).tolist() == [[3.0, 8.0]]
    assert torch.allclose(Cosine().pairwise(u, v), torch.tensor([[0.6, 0.8]]))
    # -||u - v||^2: (2^2 + 4^2) = 20 and (3^2 + 2^2) = 13.
    assert Euclidean().pairwise(u, v).tolist() == [[-20.0, -13.0]]
    assert Euclidean().rowwise(u, v[:1]).tolist() == [-20.0]
    assert Euclidean().rowwise(u, v[None]).tolist() == [[-20.0, -13.0]]


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean"])
def test_rowwise_agrees_with_pairwise(name):
    sim = get_similarity(name)
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)
    full = sim.pairwise(u, v)
    assert torch.allclose(sim.rowwise(u, v[:5]), full.diagonal()[:5], atol=1e-5)
    per_user = v[None].expand(5, 7, 8)
    assert torch.allclose(sim.rowwise(u, per_user), full, atol=1e-5)
    # The scale (1 / temperature) multiplies the scores exactly, whichever side it is applied to.
    assert torch.allclose(sim.pairwise(u, v, scale=4.0), 4.0 * full, atol=1e-4)
    assert torch.allclose(sim.rowwise(u, per_user, scale=0.5), 0.5 * full, atol=1e-5)
    # Batched: each group of users against its own items.
    groups_u, groups_v = torch.stack([u, 2 * u]), torch.stack([v, v.flip(0)])
    batched = sim.pairwise(groups_u, groups_v, scale=3.0)
    assert batched.shape == (2, 5, 7)
    for g_u, g_v, got in zip(groups_u, groups_v, batched, strict=True):
        assert torch.allclose(got, sim.pairwise(g_u, g_v, scale=3.0), atol=1e-4)


def test_seed_identity_for_normalised_vectors():
    """For unit vectors, ||a - b||^2 = 2 - 2 cos(a, b): the three measures rank alike."""
    g = torch.Generator().manual_seed(1)
    u = l2_normalize(torch.randn(16, 32, generator=g))
    v = l2_normalize(torch.randn(200, 32, generator=g))
    cos = Cosine().pairwise(u, v)
    sq_dist = -Euclidean().pairwise(u, v)
    assert torch.allclose(sq_dist, 2 - 2 * cos, atol=1e-5)
    assert torch.allclose(Dot().pairwise(u, v), cos, atol=1e-6)
    # Raw (unnormalised) vectors: euclidean(normalize=True) still ranks exactly like cosine.
    raw_u, raw_v = torch.randn(16, 32, generator=g), torch.randn(200, 32, generator=g)
    by_cos = Cosine().pairwise(raw_u, raw_v).argsort(dim=1, descending=True)
    by_l2 = Euclidean(normalize=True).pairwise(raw_u, raw_v).argsort(dim=1, descending=True)
    by_dot = Dot().pairwise(l2_normalize(raw_u), l2_normalize(raw_v)).argsort(1, descending=True)
    assert torch.equal(by_cos[:, :50], by_l2[:, :50]) and torch.equal(
        by_cos[:, :50], by_dot[:, :50]
    )


def test_similarity_names():
    assert isinstance(get_similarity("COS"), Cosine)
    assert isinstance(get_similarity("inner"), Dot)
    assert get_similarity("l2", normalize=True).normalize
    with pytest.raises(ValueError, match="unknown similarity 'manhattan'"):
        get_similarity("manhattan")


def test_temperature_is_applied_and_learnable():
    fixed = Temperature(0.2)
    assert fixed(torch.tensor([1.0, -1.0])).tolist() == pytest.approx([5.0, -5.0])
    assert not list(fixed.parameters())
    learned = Temperature(0.5, learnable=True, min_value=0.05, max_value=2.0)
    loss = listwise(learned(torch.tensor([1.0])), learned(torch.tensor([[0.5, -1.0]])))
    loss.backward()
    assert learned.log_value.grad is not None and learned.log_value.grad.abs() > 0
    with torch.no_grad():
        learned.log_value.fill_(math.log(100.0))  # pushed outside its range: clamped
    assert learned.value == pytest.approx(2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        Temperature(0.0)
    with pytest.raises(ValueError, match=r"must lie in \[min_value, max_value\]"):
        Temperature(50.0)


def test_listwise_seed_document_example():
    pos, neg = torch.tensor([1.0]), torch.tensor([[-1.0, -1.0, -1.0]])
    # -log(e / (e + 3 e^-1)) = log(1 + 3 e^-2) = 0.3408: the document's 0.341.
    assert round(listwise(pos, neg).item(), 3) == 0.341
    # Temperature 0.2 makes the logits (5, -5, -5, -5): -log(e^5 / (e^5 + 3 e^-5)) =
    # log(1 + 3 e^-10) = 0.000136. The document prints 0.016 here, which is an arithmetic
    # slip (no reading of its formula gives it); its point, a loss that becomes negligible,
    # holds all the more.
    cold = listwise(pos / 0.2, neg / 0.2).item()
    assert cold == pytest.approx(1.3619e-4, rel=1e-3)
    assert cold < listwise(pos, neg).item() / 100


def test_pointwise_by_hand():
    # pos 2 -> log(1 + e^-2) = 0.126928; neg 1 -> log(1 + e) = 1.313262;
    # neg -1 -> log(1 + e^-1) = 0.313262; mean of the three terms = 0.584484.
    pos, neg = torch.tensor([2.0]), torch.tensor([[1.0, -1.0]])
    assert pointwise(pos, neg).item() == pytest.approx(0.584484, abs=1e-6)
    # Mask the second negative: (0.126928 + 1.313262) / 2.
    mask = torch.tensor([[True, False]])
    assert pointwise(pos, neg, mask=mask).item() == pytest.approx(0.720095, abs=1e-6)
    # Temperature 0.5 doubles the logits: log(1+e^-4)=0.018150, log(1+e^2)=2.126928,
    # log(1+e^-2)=0.126928.
    assert pointwise(pos / 0.5, neg / 0.5).item() == pytest.approx(0.757335, abs=1e-6)


def test_pairwise_by_hand():
    # Differences 1 and 3: log(1 + e^-1) = 0.313262 and log(1 + e^-3) = 0.048587.
    pos, neg = torch.tensor([2.0]), torch.tensor([[1.0, -1.0]])
    assert pairwise(pos, neg).item() == pytest.approx(0.180924, abs=1e-6)
    assert pairwise(pos, neg, mask=torch.tensor([[False, True]])).item() == pytest.approx(
        0.048587, abs=1e-6
    )
    # Temperature 0.5: differences 2 and 6 -> (0.126928 + 0.002476) / 2.
    assert pairwise(pos / 0.5, neg / 0.5).item() == pytest.approx(0.064702, abs=1e-6)


def test_listwise_mask_drops_negatives():
    pos, neg = torch.tensor([1.0]), torch.tensor([[-1.0, -1.0, 5.0]])
    keep_two = torch.tensor([[True, True, False]])
    # Same as two negatives of -1: log(1 + 2 e^-2) = 0.239545.
    assert listwise(pos, neg, mask=keep_two).item() == pytest.approx(0.239545, abs=1e-6)
    assert listwise(pos, neg).item() > 3.0  # the unmasked 5 dominates


def test_batch_mean_and_shape_errors():
    pos = torch.tensor([1.0, 0.0])
    neg = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
    # Row 2: all logits equal -> log 4.
    expected = (0.341 + math.log(4)) / 2
    assert listwise(pos, neg).item() == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match=r"expected pos \[B\] and neg \[B, N\]"):
        listwise(pos, neg[0])
    with pytest.raises(ValueError, match="mask"):
        pairwise(pos, neg, mask=torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0, Mode.POINTWISE), (1, Mode.PAIRWISE), (2, Mode.LISTWISE), ("2", Mode.LISTWISE),
        ("point-wise", Mode.POINTWISE), ("Pairwise", Mode.PAIRWISE), ("list_wise", Mode.LISTWISE),
    ],
)  # fmt: skip
def test_modes_by_name_and_integer(mode, expected):
    assert parse_mode(mode) is expected
    assert (
        get_objective(mode) is {0: pointwise, 1: pairwise, 2: listwise}[list(Mode).index(expected)]
    )


@pytest.mark.parametrize("bad", [3, -1, "softmax", True, 1.0])
def test_unknown_modes(bad):
    with pytest.raises(ValueError, match="unknown training mode"):
        parse_mode(bad)
