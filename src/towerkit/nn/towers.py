"""The pooled-history user tower that YouTubeDNN and DSSM share.

``MLP(pooled history ++ [user id embedding] ++ user side features) -> D``. The model owns the
history embedding table (YouTubeDNN may tie it to its item vectors) and passes the embedded
history in; the tower pools it and runs the MLP. :meth:`PooledHistoryTower.head` is the part
after pooling, for callers that pool by other means (YouTubeDNN's sliding sums over windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from towerkit.nn.layers import (
    MLP,
    Activation,
    FeatureEmbedding,
    HistoryPooling,
    Pooling,
    padded_embedding,
)
from towerkit.types import FeatureTable


@dataclass(frozen=True)
class PooledTowerOptions:
    """How a pooled-history tower is shaped (shared by YouTubeDNN and DSSM).

    Attributes:
        hidden: hidden widths of the MLP (DSSM's item tower uses them too).
        activation, dropout: of the MLP's hidden layers.
        pooling: how the history is pooled (see :class:`~towerkit.nn.HistoryPooling`).
        recent_items: also feed the last ``recent_items`` history embeddings, in order, beside
            the pooled vector, so the MLP can learn what follows what.
        feature_dim: embedding width of each side feature.
    """

    hidden: tuple[int, ...] = (256,)
    activation: Activation = "gelu"
    dropout: float = 0.1
    pooling: Pooling = "recency"
    recent_items: int = 0
    feature_dim: int = 16


class PooledHistoryTower(nn.Module):
    """User tower: ``MLP(pooled history ++ [user id] ++ user features) -> out_dim``.

    Args:
        history_dim: width of the history embeddings it pools.
        out_dim: D, the width of the user vector.
        max_len: the history length.
        options: see :class:`PooledTowerOptions`.
        user_features: encoded user side features (an empty table for none).
        n_users: also embed the user id (``history_dim`` wide) when given; users are
            ``1..n_users``, 0 (a user the model never saw) embeds to zeros.
    """

    def __init__(
        self,
        history_dim: int,
        out_dim: int,
        *,
        max_len: int,
        options: PooledTowerOptions,
        user_features: FeatureTable,
        n_users: int | None = None,
    ) -> None:
        super().__init__()
        self.user_id = padded_embedding(n_users + 1, history_dim) if n_users else None
        self.pooling = HistoryPooling(
            options.pooling, max_len, history_dim, recent=options.recent_items
        )
        self.profile = FeatureEmbedding(user_features, options.feature_dim)
        width = self.pooling.out_dim + (history_dim if self.user_id else 0) + self.profile.out_dim
        self.mlp = MLP(
            width, options.hidden, out_dim, activation=options.activation, dropout=options.dropout
        )

    def forward(
        self,
        embedded: torch.Tensor,
        mask: torch.Tensor,
        users: torch.Tensor,
        user_features: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Args: embedded ``[B, L, H]`` history embeddings; mask ``[B, L]`` (True on real
        items); users ``[B]``; user_features: values instead of the stored ones (see
        :class:`~towerkit.types.Batch`). Returns ``[B, D]``."""
        return self.head(self.pooling(embedded, mask), users, user_features)

    def head(
        self,
        pooled: torch.Tensor,
        users: torch.Tensor,
        user_features: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``[N, pooling.out_dim]`` pooled histories -> ``[N, D]`` user vectors."""
        parts = [pooled]
        if self.user_id is not None:
            parts.append(self.user_id(users))
        parts.append(self.profile(users, user_features))
        return self.mlp(torch.cat(parts, dim=-1))
