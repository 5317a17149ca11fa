"""YouTubeDNN (Covington et al., RecSys 2016): a deep user tower over the pooled watch history
and the user's profile; on the item side, an embedding table (the softmax weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from towerkit.data.batches import Batch
from towerkit.data.encoding import FeatureTable
from towerkit.models.base import MatchingModel
from towerkit.nn import MLP, FeatureEmbedding, HistoryPooling, padded_embedding
from towerkit.nn.layers import Activation, Pooling


class YouTubeDNN(MatchingModel):
    """User tower: MLP(pooled history embeddings ++ profile embeddings) -> D.
    Item tower: an embedding table of width D.

    Args:
        n_items: catalogue size (ids ``1..n_items``; 0 is padding).
        embedding_dim: D, the width of item and user vectors.
        hidden: hidden widths of the user MLP.
        activation, dropout: of the user MLP.
        pooling: how the history is pooled (see :class:`~towerkit.nn.HistoryPooling`).
        max_len: history length.
        user_features: encoded user side features (gender, age, ...), or None.
        feature_dim: embedding width of each user feature.
        share_embeddings: use one table for history inputs and output item vectors.
        recent_items: also feed the embeddings of the last ``recent_items`` items, in order,
            to the MLP (beside the pooled history), so it can learn what follows what.

    Example:
        >>> model = YouTubeDNN(n_items=3706, embedding_dim=64, hidden=(256,))
        >>> model.encode_items(torch.arange(1, 3707)).shape
        torch.Size([3706, 64])
    """

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = 64,
        hidden: Sequence[int] = (256,),
        activation: Activation = "gelu",
        dropout: float = 0.1,
        pooling: Pooling = "recency",
        max_len: int = 50,
        user_features: FeatureTable | None = None,
        feature_dim: int = 16,
        share_embeddings: bool = False,
        recent_items: int = 0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.history_embedding = padded_embedding(n_items + 1, embedding_dim)
        self.item_embedding: nn.Embedding = (
            self.history_embedding
            if share_embeddings
            else padded_embedding(n_items + 1, embedding_dim)
        )
        self.pooling = HistoryPooling(pooling, max_len, embedding_dim, recent=recent_items)
        self.profile = FeatureEmbedding(user_features or FeatureTable(), feature_dim)
        self.tower = MLP(
            self.pooling.out_dim + self.profile.out_dim,
            hidden,
            embedding_dim,
            activation=activation,
            dropout=dropout,
        )

    def encode_users(self, batch: Batch) -> torch.Tensor:
        mask = batch.history > 0  # (B, L)
        embedded = self.history_embedding(batch.history)  # (B, L, D); padding rows are zero
        features = [self.pooling(embedded, mask), self.profile(batch.users)]  # (B, (1+k)D + F)
        return self.tower(torch.cat(features, dim=-1))  # (B, D)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(item_ids)  # (N, D)
