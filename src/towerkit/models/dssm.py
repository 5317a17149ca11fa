"""DSSM (Huang et al., CIKM 2013) as a recommender two-tower: one MLP per side."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from towerkit.data.batches import Batch
from towerkit.data.encoding import FeatureTable
from towerkit.models.base import MatchingModel
from towerkit.nn import MLP, FeatureEmbedding, HistoryPooling, padded_embedding
from towerkit.nn.layers import Activation, Pooling


class DSSM(MatchingModel):
    """User tower: MLP(user id ++ user features ++ pooled history) -> D.
    Item tower: MLP(item id ++ item features) -> D.

    Args:
        n_users, n_items: id ranges (``1..n``; 0 is padding).
        embedding_dim: D, the output width of both towers.
        id_dim: width of the id and history embeddings.
        hidden: hidden widths of both towers' MLPs.
        activation, dropout: of both MLPs.
        pooling: how the user's history is pooled.
        max_len: history length.
        user_features, item_features: encoded side features, or None.
        feature_dim: embedding width of each side feature.
        use_user_id: embed the user id (off for users unseen in training).
        recent_items: also feed the last ``recent_items`` history embeddings, in order.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        embedding_dim: int = 64,
        id_dim: int = 64,
        hidden: Sequence[int] = (256,),
        activation: Activation = "gelu",
        dropout: float = 0.1,
        pooling: Pooling = "recency",
        max_len: int = 50,
        user_features: FeatureTable | None = None,
        item_features: FeatureTable | None = None,
        feature_dim: int = 16,
        use_user_id: bool = True,
        recent_items: int = 0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.use_user_id = use_user_id
        self.user_id = padded_embedding(n_users + 1, id_dim) if use_user_id else None
        self.history_embedding = padded_embedding(n_items + 1, id_dim)
        self.item_id = padded_embedding(n_items + 1, id_dim)
        self.pooling = HistoryPooling(pooling, max_len, id_dim, recent=recent_items)
        self.user_side = FeatureEmbedding(user_features or FeatureTable(), feature_dim)
        self.item_side = FeatureEmbedding(item_features or FeatureTable(), feature_dim)
        user_in = self.pooling.out_dim + (id_dim if use_user_id else 0) + self.user_side.out_dim
        item_in = id_dim + self.item_side.out_dim
        kwargs = {"activation": activation, "dropout": dropout}
        self.user_tower = MLP(user_in, hidden, embedding_dim, **kwargs)
        self.item_tower = MLP(item_in, hidden, embedding_dim, **kwargs)

    def encode_users(self, batch: Batch) -> torch.Tensor:
        mask = batch.history > 0  # (B, L)
        parts = [self.pooling(self.history_embedding(batch.history), mask)]  # (B, (1 + k) id_dim)
        if self.user_id is not None:
            parts.append(self.user_id(batch.users))
        parts.append(self.user_side(batch.users))
        return self.user_tower(torch.cat(parts, dim=-1))  # (B, D)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        parts = [self.item_id(item_ids), self.item_side(item_ids)]
        return self.item_tower(torch.cat(parts, dim=-1))  # (N, D)
