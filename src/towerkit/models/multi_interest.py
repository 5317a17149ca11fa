"""Multi-interest user towers: one user becomes ``K`` vectors, one per interest.

- :class:`ComiRecSA` (Cen et al., KDD 2020, self-attentive): ``K`` attention heads over the
  history, ``A = softmax_L(W2 tanh(W1 H^T))``, interests ``A H``.
- :class:`ComiRecDR` (same paper, dynamic routing): behaviour capsules mapped by one bilinear
  map per interest, routing logits starting at 0.
- :class:`MIND` (Li et al., CIKM 2019, behaviour-to-interest routing): one shared bilinear map,
  routing logits starting from a fixed random draw, then a shared ReLU layer on each interest.

Routing (3 iterations by default): each behaviour spreads over the interests by
``softmax_K(b)``, an interest is the squashed weighted sum of its mapped behaviours, and the
logits grow by the agreement of each behaviour with each interest. Padding (id 0) never takes
part: its weights are zero in routing and attention.

``encode_users`` returns ``[B, K, D]``. Training is label-aware (as both papers): a query is the
interest that scores its positive best (:meth:`MultiInterestModel.select_interest`), so every
training mode and negative strategy works unchanged; evaluation and search rank by the best
interest's score (``Index.search_multi``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from towerkit.models.base import DataShape, MatchingModel, ModelSection
from towerkit.nn import padded_embedding
from towerkit.sections import MAX_LAYERS, MAX_WIDTH
from towerkit.types import Batch


def squash(z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Capsule squashing: keeps the direction, maps the length ``n`` to ``n^2 / (1 + n^2)``."""
    norm2 = (z * z).sum(-1, keepdim=True)
    return z * (norm2 / (1 + norm2) / torch.sqrt(norm2 + eps))


def route(
    behaviours: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor, iterations: int
) -> torch.Tensor:
    """Dynamic routing.

    Args:
        behaviours: ``[B, K, L, D]`` mapped behaviour capsules (one map per interest, or the
            same map broadcast).
        mask: ``[B, L]`` true for real items.
        logits: ``[B, K, L]`` initial routing logits, or any shape that broadcasts to it
            (``[K, L]``, ``[K, 1]``): no tensor sized by the batch, so a traced (ONNX) tower
            keeps a dynamic batch.

    Returns:
        ``[B, K, D]`` interest capsules.
    """
    b = logits
    keep = mask[:, None, :].to(behaviours.dtype)  # (B, 1, L)
    for step in range(iterations):
        weights = torch.softmax(b, dim=-2) * keep  # each behaviour over the interests
        last = step == iterations - 1
        # Only the last pass carries gradients: the logits are routing state, not parameters.
        mapped = behaviours if last else behaviours.detach()
        interests = squash(torch.einsum("bkl,bkld->bkd", weights, mapped))  # (B, K, D)
        if not last:
            b = b + torch.einsum("bkld,bkd->bkl", mapped, interests)
    return interests


class MultiInterestSection(ModelSection):
    """The keys of multi-interest models."""

    interests: int = Field(default=4, ge=1, le=MAX_LAYERS, description="K: vectors per user")

    def vectors_per_user(self) -> int:
        return self.interests


class ComiRecSAConfig(MultiInterestSection):
    """ComiRec-SA: K self-attention heads over the history."""

    name: Literal["comirec_sa"] = "comirec_sa"
    attention_dim: int | None = Field(
        default=None, ge=1, le=MAX_WIDTH, description="W1's width (4D)"
    )


class ComiRecDRConfig(MultiInterestSection):
    """ComiRec-DR: dynamic routing, one bilinear map per interest."""

    name: Literal["comirec_dr"] = "comirec_dr"
    iterations: int = Field(default=3, ge=1, le=MAX_LAYERS, description="routing iterations")


class MINDConfig(MultiInterestSection):
    """MIND: behaviour-to-interest routing with a shared bilinear map."""

    name: Literal["mind"] = "mind"
    iterations: int = Field(default=3, ge=1, le=MAX_LAYERS, description="routing iterations")


class MultiInterestModel(MatchingModel):
    """Shared parts: the item table (inputs and item vectors) and label-aware selection.

    Args:
        n_items: catalogue size.
        embedding_dim: D.
        interests: K, the vectors per user.
        max_len: the history length read.
    """

    def __init__(self, n_items: int, embedding_dim: int, interests: int, max_len: int) -> None:
        super().__init__()
        self.embedding_dim, self.n_interests, self.max_len = embedding_dim, interests, max_len
        self.item_embedding = padded_embedding(n_items + 1, embedding_dim)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(item_ids)

    def encode_users(self, batch: Batch) -> torch.Tensor:
        history = batch.history[:, -self.max_len :]
        return self.interests(self.item_embedding(history), history > 0)  # (B, K, D)

    def interests(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` embedded history and its ``[B, L]`` mask -> ``[B, K, D]``."""
        raise NotImplementedError

    def select_interest(self, interests: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Label-aware: per query the interest whose dot product with its positive's vector is
        highest (``[Q, K, D]`` -> ``[Q, D]``)."""
        with torch.no_grad():
            best = torch.einsum("qkd,qd->qk", interests, self.encode_items(positives)).argmax(1)
        return interests[torch.arange(len(interests), device=interests.device), best]


class ComiRecSA(MultiInterestModel):
    """ComiRec-SA: ``K`` self-attention heads over the history (with position embeddings).

    Args:
        attention_dim: the width of ``W1`` (default ``4 D``).
    """

    config_class = ComiRecSAConfig

    @classmethod
    def from_config(cls, config: ComiRecSAConfig, data: DataShape) -> ComiRecSA:
        return cls(
            data.n_items, embedding_dim=config.embedding_dim, interests=config.interests,
            max_len=data.max_len, attention_dim=config.attention_dim,
        )  # fmt: skip

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = ComiRecSAConfig.default("embedding_dim"),
        interests: int = ComiRecSAConfig.default("interests"),
        max_len: int = 50,
        attention_dim: int | None = ComiRecSAConfig.default("attention_dim"),
    ) -> None:
        super().__init__(n_items, embedding_dim, interests, max_len)
        width = attention_dim or 4 * embedding_dim
        self.positions = nn.Parameter(torch.zeros(max_len, embedding_dim))
        nn.init.normal_(self.positions, std=0.02)
        self.w1 = nn.Linear(embedding_dim, width, bias=False)
        self.w2 = nn.Linear(width, interests, bias=False)

    def interests(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = embedded.shape[1]
        keys = embedded + self.positions[-length:]
        scores = self.w2(torch.tanh(self.w1(keys))).transpose(1, 2)  # (B, K, L)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores, -1).nan_to_num(0.0)  # an empty history: zeros
        return weights @ embedded  # (B, K, D)


class RoutingModel(MultiInterestModel):
    """Shared parts of the routing models: behaviour capsules and starting logits from
    :meth:`capsules`, :func:`route` for ``iterations`` passes, then :meth:`readout`.

    Args:
        iterations: routing passes.
    """

    @classmethod
    def from_config(cls, config: ComiRecDRConfig | MINDConfig, data: DataShape) -> RoutingModel:
        return cls(
            data.n_items, embedding_dim=config.embedding_dim, interests=config.interests,
            max_len=data.max_len, iterations=config.iterations,
        )  # fmt: skip

    def __init__(
        self, n_items: int, embedding_dim: int, interests: int, max_len: int, iterations: int
    ) -> None:
        super().__init__(n_items, embedding_dim, interests, max_len)
        self.iterations = iterations

    def capsules(self, embedded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, D]`` -> mapped behaviours ``[B, K, L, D]`` and starting logits that
        broadcast to ``[B, K, L]``."""
        raise NotImplementedError

    def readout(self, interests: torch.Tensor) -> torch.Tensor:
        """The interests as the model outputs them (MIND adds a layer; ComiRec-DR none)."""
        return interests

    def interests(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        behaviours, logits = self.capsules(embedded)
        return self.readout(route(behaviours, mask, logits, self.iterations))


class ComiRecDR(RoutingModel):
    """ComiRec-DR: dynamic routing with one bilinear map per interest, logits from 0."""

    config_class = ComiRecDRConfig

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = ComiRecDRConfig.default("embedding_dim"),
        interests: int = ComiRecDRConfig.default("interests"),
        max_len: int = 50,
        iterations: int = ComiRecDRConfig.default("iterations"),
    ) -> None:
        super().__init__(n_items, embedding_dim, interests, max_len, iterations)
        self.maps = nn.Parameter(torch.empty(interests, embedding_dim, embedding_dim))
        nn.init.normal_(self.maps, std=embedding_dim**-0.5)

    def capsules(self, embedded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        behaviours = torch.einsum("kde,ble->bkld", self.maps, embedded)  # (B, K, L, D)
        return behaviours, embedded.new_zeros(self.n_interests, 1)  # uniform over interests


class MIND(RoutingModel):
    """MIND: behaviour-to-interest routing with one shared bilinear map and routing logits
    from a fixed random draw (so a user's interests do not depend on the call), then a shared
    ReLU layer on each interest (the paper's interest MLP, without user profile features)."""

    config_class = MINDConfig

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = MINDConfig.default("embedding_dim"),
        interests: int = MINDConfig.default("interests"),
        max_len: int = 50,
        iterations: int = MINDConfig.default("iterations"),
        seed: int = 0,
    ) -> None:
        super().__init__(n_items, embedding_dim, interests, max_len, iterations)
        self.map = nn.Linear(embedding_dim, embedding_dim, bias=False)
        start = torch.randn(interests, max_len, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("start_logits", start)
        self.out = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.ReLU(),
                                 nn.Linear(embedding_dim, embedding_dim))  # fmt: skip

    def capsules(self, embedded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = embedded.shape[1]
        behaviours = self.map(embedded)[:, None].expand(-1, self.n_interests, -1, -1)
        return behaviours, self.start_logits[:, -length:]  # (K, L), the same for every user

    def readout(self, interests: torch.Tensor) -> torch.Tensor:
        return self.out(interests)


__all__ = [
    "MIND",
    "ComiRecDR",
    "ComiRecDRConfig",
    "ComiRecSA",
    "ComiRecSAConfig",
    "MINDConfig",
    "MultiInterestModel",
    "MultiInterestSection",
    "RoutingModel",
    "route",
    "squash",
]
