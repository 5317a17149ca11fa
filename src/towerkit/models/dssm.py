"""DSSM (Huang et al., CIKM 2013) as a recommender two-tower: one MLP per side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field

from towerkit.models.base import DataShape, MatchingModel, PooledHistorySection
from towerkit.nn import (
    MLP,
    FeatureEmbedding,
    PooledHistoryTower,
    PooledTowerOptions,
    padded_embedding,
)
from towerkit.sections import MAX_WIDTH
from towerkit.types import Batch, FeatureTable


class DSSMConfig(PooledHistorySection):
    """DSSM: MLP(pooled history ++ user id ++ user features) against MLP(item id ++ item
    features)."""

    name: Literal["dssm"] = "dssm"
    id_dim: int = Field(
        default=64, ge=1, le=MAX_WIDTH, description="id and history embedding width"
    )
    use_user_id: bool = Field(default=True, description="embed the user id")

    def history_width(self) -> tuple[str, int]:
        return "id_dim", self.id_dim


class DSSM(MatchingModel):
    """User tower: MLP(pooled history ++ user id ++ user features) -> D.
    Item tower: MLP(item id ++ item features) -> D.

    Args:
        n_users, n_items: id ranges (``1..n``; 0 is padding, and a user the model never saw).
        embedding_dim: D, the output width of both towers.
        id_dim: width of the id and history embeddings.
        max_len: history length.
        user_features, item_features: encoded side features, or None.
        use_user_id: embed the user id (off for users unseen in training).
        tower: the towers' shape: the user tower's pooling and recent items, and the MLP
            (hidden widths, activation, dropout) and feature width of both towers.
    """

    config_class = DSSMConfig

    @classmethod
    def from_config(cls, config: DSSMConfig, data: DataShape) -> DSSM:
        return cls(
            data.n_users,
            data.n_items,
            embedding_dim=config.embedding_dim,
            id_dim=config.id_dim,
            max_len=data.max_len,
            user_features=data.user_features,
            item_features=data.item_features,
            use_user_id=config.use_user_id,
            tower=config.tower(),
        )

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        embedding_dim: int = DSSMConfig.default("embedding_dim"),
        id_dim: int = DSSMConfig.default("id_dim"),
        max_len: int = 50,
        user_features: FeatureTable | None = None,
        item_features: FeatureTable | None = None,
        use_user_id: bool = DSSMConfig.default("use_user_id"),
        tower: PooledTowerOptions | None = None,
    ) -> None:
        super().__init__()
        tower = tower or PooledTowerOptions()
        self.embedding_dim = embedding_dim
        self.history_embedding = padded_embedding(n_items + 1, id_dim)
        self.item_id = padded_embedding(n_items + 1, id_dim)
        self.user_tower = PooledHistoryTower(
            id_dim,
            embedding_dim,
            max_len=max_len,
            options=tower,
            user_features=user_features or FeatureTable(),
            n_users=n_users if use_user_id else None,
        )
        self.item_side = FeatureEmbedding(item_features or FeatureTable(), tower.feature_dim)
        self.item_tower = MLP(
            id_dim + self.item_side.out_dim,
            tower.hidden,
            embedding_dim,
            activation=tower.activation,
            dropout=tower.dropout,
        )

    def encode_users(self, batch: Batch) -> torch.Tensor:
        mask = batch.history > 0  # (B, L)
        embedded = self.history_embedding(batch.history)  # (B, L, id_dim)
        return self.user_tower(embedded, mask, batch.users, batch.user_features)  # (B, D)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        parts = [self.item_id(item_ids), self.item_side(item_ids)]
        return self.item_tower(torch.cat(parts, dim=-1))  # (N, D)

    @property
    def reads_item_features(self) -> bool:
        return bool(self.item_side.names)

    def encode_items_with(
        self, item_ids: torch.Tensor, values: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        if not self.item_side.names:
            return self.encode_items(item_ids)
        parts = [self.item_id(item_ids), self.item_side(item_ids, values)]
        return self.item_tower(torch.cat(parts, dim=-1))  # (N, D)

    def encode_unseen_items(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The item tower on the unknown id's row (id 0: zeros) and the given features."""
        if not self.item_side.names:
            return super().encode_unseen_items(values)
        return self.encode_items_with(self._unseen_ids(values), values)
