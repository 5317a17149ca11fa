"""YouTubeDNN (Covington et al., RecSys 2016): a deep user tower over the pooled watch history
and the user's profile; on the item side, an embedding table (the softmax weights)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from towerkit.models.base import DataShape, MatchingModel, PooledHistorySection
from towerkit.nn import PooledHistoryTower, PooledTowerOptions, padded_embedding
from towerkit.types import Batch, FeatureTable, SequenceBatch


class YouTubeDNNConfig(PooledHistorySection):
    """YouTubeDNN: MLP(pooled history ++ user features) against an item embedding table."""

    name: Literal["youtube_dnn"] = "youtube_dnn"
    share_embeddings: bool = Field(
        default=False, description="one table for history inputs and item vectors"
    )


class YouTubeDNN(MatchingModel):
    """User tower: MLP(pooled history embeddings ++ profile embeddings) -> D.
    Item tower: an embedding table of width D.

    Args:
        n_items: catalogue size (ids ``1..n_items``; 0 is padding).
        embedding_dim: D, the width of item and user vectors.
        max_len: history length.
        user_features: encoded user side features (gender, age, ...), or None.
        share_embeddings: use one table for history inputs and output item vectors.
        tower: the user tower's shape (MLP, pooling, recent items, feature width); default
            :class:`~towerkit.nn.PooledTowerOptions()`.

    Example:
        >>> model = YouTubeDNN(n_items=3706, embedding_dim=64)
        >>> model.encode_items(torch.arange(1, 3707)).shape
        torch.Size([3706, 64])
    """

    encodes_positions = True

    config_class = YouTubeDNNConfig

    @classmethod
    def from_config(cls, config: YouTubeDNNConfig, data: DataShape) -> YouTubeDNN:
        return cls(
            data.n_items,
            embedding_dim=config.embedding_dim,
            max_len=data.max_len,
            user_features=data.user_features,
            share_embeddings=config.share_embeddings,
            tower=config.tower(),
        )

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = YouTubeDNNConfig.default("embedding_dim"),
        max_len: int = 50,
        user_features: FeatureTable | None = None,
        share_embeddings: bool = YouTubeDNNConfig.default("share_embeddings"),
        tower: PooledTowerOptions | None = None,
    ) -> None:
        super().__init__()
        tower = tower or PooledTowerOptions()
        self.embedding_dim = embedding_dim
        self.history_embedding = padded_embedding(n_items + 1, embedding_dim)
        self.item_embedding: nn.Embedding = (
            self.history_embedding
            if share_embeddings
            else padded_embedding(n_items + 1, embedding_dim)
        )
        self.user_tower = PooledHistoryTower(
            embedding_dim,
            embedding_dim,
            max_len=max_len,
            options=tower,
            user_features=user_features or FeatureTable(),
        )

    def encode_users(self, batch: Batch) -> torch.Tensor:
        mask = batch.history > 0  # (B, L)
        embedded = self.history_embedding(batch.history)  # (B, L, D); padding rows are zero
        return self.user_tower(embedded, mask, batch.users, batch.user_features)  # (B, D)

    def encode_positions(self, batch: SequenceBatch) -> torch.Tensor:
        """``[W, T, D]`` queries at every position of windows built with ``context = max_len - 1``
        (see :class:`~towerkit.data.batches.SequenceBatches`): position ``j`` pools the
        ``max_len`` inputs up to ``j``, exactly the history of the same training sample.
        Positions without a target (context, padding) are left zero.

        Mean and sum pooling run as sliding-window sums over one cumulative sum per window, so
        each item is embedded once per window rather than once per sample whose history holds
        it (``max_len`` times); other poolings fall back to gathering each position's history.
        """
        history = batch.history
        queries = batch.layout  # (W, T): the positions that are trained
        window, _ = torch.nonzero(queries, as_tuple=True)  # (Q,): the window of each query
        n_windows, width = history.shape
        pooling = self.user_tower.pooling
        length = pooling.max_len
        if pooling.mode in ("mean", "sum") and not pooling.recent:
            real = (history > 0).to(torch.float32)  # (W, T)
            embedded = self.history_embedding(history)  # (W, T, D); padding rows are zero
            pad = torch.zeros(n_windows, 1, embedded.shape[-1], dtype=embedded.dtype)
            sums = torch.cat([pad, embedded], 1).cumsum(1)  # (W, T + 1, D)
            counts = torch.cat([real.new_zeros(n_windows, 1), real], 1).cumsum(1)  # (W, T + 1)
            lo = (torch.arange(1, width + 1) - length).clamp_min(0)  # window start per position
            pooled = sums[:, 1:] - sums[:, lo]  # (W, T, D): sum of the last max_len inputs
            if pooling.mode == "mean":
                pooled = pooled / (counts[:, 1:] - counts[:, lo]).clamp_min(1.0)[..., None]
            # The tower runs on query positions only (context and padding columns are skipped).
            vectors = self.user_tower.head(pooled[queries], batch.users[window])  # (Q, D)
        else:
            # Generic path: each query position's own [max_len] history, through encode_users.
            padded = torch.cat([history.new_zeros(n_windows, length - 1), history], 1)
            windows = padded.unfold(1, length, 1)  # (W, T, max_len)
            flat = Batch(users=batch.users[window], history=windows[queries],
                         targets=batch.targets[queries])  # fmt: skip
            vectors = self.encode_users(flat)  # (Q, D)
        out = vectors.new_zeros(n_windows, width, vectors.shape[-1])
        out[queries] = vectors
        return out

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(item_ids)  # (N, D)
