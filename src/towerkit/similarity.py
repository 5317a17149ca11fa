"""Similarity measures and temperature: how a user vector and an item vector become a score.

All three measures follow "higher is closer":

- **cosine**: L2-normalise both sides, then dot product;
- **dot**: the plain inner product;
- **euclidean**: the *negative squared* distance ``-||u - v||^2`` (optionally on L2-normalised
  vectors, where it equals ``2 cos - 2``, so it ranks items exactly as cosine does).

Each measure offers ``pairwise(U[B, D], V[N, D]) -> [B, N]`` for scoring a catalogue and
``rowwise(U[B, D], V[B, D]) -> [B]`` (or ``V[B, K, D] -> [B, K]``) for scoring each query against
its own candidates.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SimilarityName = Literal["cosine", "dot", "euclidean"]
Scale = float | torch.Tensor | None

_EPS = 1e-12


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale the last dimension to unit L2 norm (zero vectors stay zero)."""
    return F.normalize(x, p=2.0, dim=-1, eps=_EPS)


class Similarity:
    """Base class: subclasses define ``prepare`` and the raw scores of prepared vectors."""

    name: str = ""
    normalize: bool = False

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors as they are compared (normalised for cosine)."""
        return l2_normalize(x) if self.normalize else x

    def pairwise(
        self, users: torch.Tensor, items: torch.Tensor, scale: Scale = None
    ) -> torch.Tensor:
        """Scores of every user against every item: ``[B, D] x [N, D] -> [B, N]``, or batched,
        ``[G, B, D] x [G, N, D] -> [G, B, N]`` (each group against its own items).

        ``scale`` multiplies the scores (``1 / temperature``); it is applied to the ``[B, D]``
        side, which is cheaper than dividing the ``[B, N]`` result and exactly equal.
        """
        u = self.prepare(users)
        if scale is not None:
            u = u * scale
        return u @ self.prepare(items).mT

    def rowwise(
        self, users: torch.Tensor, items: torch.Tensor, scale: Scale = None
    ) -> torch.Tensor:
        """Scores of each user against its own items.

        ``items`` is ``[B, D]`` (one item per user, returns ``[B]``) or ``[B, K, D]`` (K items per
        user, returns ``[B, K]``). ``scale`` multiplies the scores.
        """
        u, v = self.prepare(users), self.prepare(items)
        if scale is not None:
            u = u * scale
        if v.dim() == 2:
            return (u * v).sum(-1)
        return torch.einsum("bd,bkd->bk", u, v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Cosine(Similarity):
    """Cosine similarity in ``[-1, 1]``: L2-normalise, then dot."""

    name = "cosine"
    normalize = True


class Dot(Similarity):
    """Inner product: unbounded, lets vector norms carry popularity."""

    name = "dot"


class Euclidean(Similarity):
    """Negative squared Euclidean distance, so that higher is closer.

    Args:
        normalize: L2-normalise both sides first; then ``-||u - v||^2 = 2 cos(u, v) - 2``.
    """

    name = "euclidean"

    def __init__(self, normalize: bool = False) -> None:
        self.normalize = normalize

    def pairwise(
        self, users: torch.Tensor, items: torch.Tensor, scale: Scale = None
    ) -> torch.Tensor:
        u, v = self.prepare(users), self.prepare(items)
        scale = 1.0 if scale is None else scale
        # s * ||u - v||^2 = s ||u||^2 - 2 (s u).v + s ||v||^2: one matrix product, the scale
        # applied to vectors rather than to the [B, N] result.
        su = u * scale
        v_sq = (v * v).sum(-1)[..., None, :] * scale
        sq = (su * u).sum(-1, keepdim=True) - 2 * (su @ v.mT) + v_sq
        return -sq.clamp_min(0.0)

    def rowwise(
        self, users: torch.Tensor, items: torch.Tensor, scale: Scale = None
    ) -> torch.Tensor:
        u, v = self.prepare(users), self.prepare(items)
        if v.dim() == 3:
            u = u[:, None, :]
        scores = -((u - v) ** 2).sum(-1)
        return scores if scale is None else scores * scale

    def __repr__(self) -> str:
        return f"Euclidean(normalize={self.normalize})"


_ALIASES: dict[str, SimilarityName] = {
    "cosine": "cosine",
    "cos": "cosine",
    "dot": "dot",
    "inner": "dot",
    "ip": "dot",
    "euclidean": "euclidean",
    "l2": "euclidean",
}


def get_similarity(name: str | Similarity, *, normalize: bool = False) -> Similarity:
    """A similarity by name (``cosine``, ``dot``, ``euclidean`` or an alias).

    Args:
        normalize: for ``euclidean`` only: compare L2-normalised vectors.
    """
    if isinstance(name, Similarity):
        return name
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown similarity {name!r}; use one of: cosine, dot, euclidean")
    if key == "cosine":
        return Cosine()
    if key == "dot":
        return Dot()
    return Euclidean(normalize=normalize)


class Temperature(nn.Module):
    """Divides scores by a temperature before the loss: ``logits = scores / tau``.

    A small temperature stretches bounded scores (cosine lives in [-1, 1]) back into the range
    where softmax and sigmoid are sensitive. It is either fixed or learned; a learned
    temperature is stored as ``log(tau)`` (so it stays positive) and clamped to
    ``[min_value, max_value]``.

    Args:
        value: the initial (or fixed) temperature, > 0.
        learnable: learn it with the model.
        min_value, max_value: the range a learned temperature is kept in.

    Example:
        >>> Temperature(0.2)(torch.tensor([1.0, -1.0]))
        tensor([ 5., -5.])
    """

    def __init__(
        self,
        value: float = 1.0,
        *,
        learnable: bool = False,
        min_value: float = 0.01,
        max_value: float = 10.0,
    ) -> None:
        super().__init__()
        if not value > 0:
            raise ValueError(f"temperature must be > 0, got {value}")
        if not 0 < min_value <= value <= max_value:
            raise ValueError(
                f"temperature {value} must lie in [min_value, max_value] = "
                f"[{min_value}, {max_value}]"
            )
        self.learnable = learnable
        self.min_log, self.max_log = math.log(min_value), math.log(max_value)
        log_value = torch.tensor(math.log(value), dtype=torch.float32)
        if learnable:
            self.log_value = nn.Parameter(log_value)
        else:
            self.register_buffer("log_value", log_value)

    @property
    def value(self) -> float:
        """The temperature in use now."""
        return float(self.log_value.detach().clamp(self.min_log, self.max_log).exp())

    def inverse(self) -> torch.Tensor:
        """``1 / tau`` as a (differentiable) scalar tensor: the factor that scales scores."""
        return torch.exp(-self.log_value.clamp(self.min_log, self.max_log))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores * self.inverse()

    def extra_repr(self) -> str:
        return f"value={self.value:.4g}, learnable={self.learnable}"
