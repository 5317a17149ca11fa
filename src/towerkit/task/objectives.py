"""Training objectives: pure functions of scores, easy to check by hand.

Each takes the logits ``pos`` ``[B]`` (one positive per query) and ``neg`` ``[B, N]`` (N negatives
per query), already scaled by the temperature (see :class:`~towerkit.task.RetrievalTask`), and
returns the mean loss. An optional boolean ``mask`` ``[B, N]`` marks the negatives that count
(``False`` drops accidental hits and padding); optional positive ``weights`` ``[B]`` weight each
query's terms (a weighted mean).

- **point-wise** (mode 0): binary cross-entropy on logits; the positive is labelled 1, each
  negative 0. The mean is over all labelled terms that count (``B`` positives plus the kept
  negatives).
- **pair-wise** (mode 1): BPR, ``-log sigmoid(s+ - s-)``, averaged over the kept pairs.
- **list-wise** (mode 2): softmax cross-entropy over ``[positive, negatives]``, averaged over
  the queries.

The mode is chosen once, with :func:`get_objective`, never re-tested in the training loop.
A temperature ``t`` is applied before: ``listwise(pos / t, neg / t)``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch
import torch.nn.functional as F

Objective = Callable[..., torch.Tensor]


class Mode(str, Enum):
    """The three training modes; the seed document's integers 0/1/2 are aliases."""

    POINTWISE = "pointwise"
    PAIRWISE = "pairwise"
    LISTWISE = "listwise"


_INTEGER_MODES = {0: Mode.POINTWISE, 1: Mode.PAIRWISE, 2: Mode.LISTWISE}


def _check(
    pos: torch.Tensor,
    neg: torch.Tensor,
    mask: torch.Tensor | None,
    weights: torch.Tensor | None = None,
) -> None:
    if pos.dim() != 1 or neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"expected pos [B] and neg [B, N], got pos {tuple(pos.shape)} "
            f"and neg {tuple(neg.shape)}"
        )
    if mask is not None and mask.shape != neg.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of neg {tuple(neg.shape)}")
    if weights is not None and weights.shape != pos.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must have the shape of pos")


def pointwise(
    pos: torch.Tensor,
    neg: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy: positives labelled 1, negatives 0 (mean over counted terms).

    Example (the negative ``-1`` is dropped by the mask)::

        pointwise(tensor([0.]), tensor([[0., -1.]]), mask=tensor([[True, False]]))
        = (-log sigmoid(0) - log(1 - sigmoid(0))) / 2 = log 2
    """
    _check(pos, neg, mask, weights)
    pos_terms = F.softplus(-pos)  # -log sigmoid(s)
    neg_terms = F.softplus(neg)  # -log (1 - sigmoid(s))
    if weights is not None:
        keep = torch.ones_like(neg) if mask is None else mask.to(neg.dtype)
        terms = pos_terms + (neg_terms * keep).sum(1)  # (B,)
        return (weights * terms).sum() / (weights * (1 + keep.sum(1))).sum()
    if mask is None:
        return (pos_terms.sum() + neg_terms.sum()) / (pos.numel() + neg.numel())
    keep = mask.to(neg.dtype)
    return (pos_terms.sum() + (neg_terms * keep).sum()) / (pos.numel() + keep.sum())


def pairwise(
    pos: torch.Tensor,
    neg: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """BPR: ``-log sigmoid(s+ - s-)`` averaged over the (kept) positive-negative pairs."""
    _check(pos, neg, mask, weights)
    diff = pos[:, None] - neg  # (B, N)
    terms = F.softplus(-diff)
    if weights is not None:
        keep = torch.ones_like(terms) if mask is None else mask.to(terms.dtype)
        keep = keep * weights[:, None]
        return (terms * keep).sum() / keep.sum().clamp_min(torch.finfo(terms.dtype).tiny)
    if mask is None:
        return terms.mean()
    keep = mask.to(terms.dtype)
    return (terms * keep).sum() / keep.sum().clamp_min(1.0)


def listwise(
    pos: torch.Tensor,
    neg: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy with the positive as the target among ``[pos, neg...]``.

    Example (the seed document's): ``listwise(tensor([1.]), tensor([[-1., -1., -1.]]))`` is
    ``-log(e / (e + 3 / e)) = 0.341``; at temperature 0.2 the logits become ``(5, -5, -5, -5)``
    and the loss ``log(1 + 3 e^-10) = 0.000136`` (the document prints 0.016, an arithmetic
    slip).
    """
    _check(pos, neg, mask, weights)
    if mask is not None:
        # The most negative float rather than -inf: a row whose negatives are all masked
        # then has a zero loss and zero gradients instead of NaN.
        neg = neg.masked_fill(~mask, torch.finfo(neg.dtype).min)
    # -log softmax_0([pos, neg]) = log(1 + exp(logsumexp(neg) - pos)): no concatenated copy of
    # the [B, N] block (full-softmax steps are dominated by such passes), and exact for tiny
    # losses where logsumexp([pos, neg]) - pos would cancel in float32.
    rows = F.softplus(torch.logsumexp(neg, dim=1) - pos)  # (B,)
    return rows.mean() if weights is None else (rows * weights).sum() / weights.sum()


_OBJECTIVES: dict[Mode, Objective] = {
    Mode.POINTWISE: pointwise,
    Mode.PAIRWISE: pairwise,
    Mode.LISTWISE: listwise,
}


def parse_mode(mode: str | int | Mode) -> Mode:
    """``"pointwise" | "pairwise" | "listwise"`` or the seed's ``0 | 1 | 2``."""
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, int) and not isinstance(mode, bool):
        if mode in _INTEGER_MODES:
            return _INTEGER_MODES[mode]
    elif isinstance(mode, str):
        key = mode.strip().lower().replace("-", "").replace("_", "")
        if key.isdigit() and int(key) in _INTEGER_MODES:
            return _INTEGER_MODES[int(key)]
        for candidate in Mode:
            if candidate.value == key:
                return candidate
    raise ValueError(
        f"unknown training mode {mode!r}; use pointwise (0), pairwise (1) or listwise (2)"
    )


def get_objective(mode: str | int | Mode) -> Objective:
    """The loss function of a training mode, chosen once."""
    return _OBJECTIVES[parse_mode(mode)]
