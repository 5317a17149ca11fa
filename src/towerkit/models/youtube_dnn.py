"""YouTubeDNN (Covington et al., RecSys 2016): a deep user tower over the pooled watch history
and the user's profile; on the item side, an embedding table (the softmax weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from towerkit.data.batches import Batch, SequenceBatch
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
        queries = batch.targets > 0  # (W, T): the positions that are trained
        window, _ = torch.nonzero(queries, as_tuple=True)  # (Q,): the window of each query
        n_windows, width = history.shape
        length = self.pooling.max_len
        if self.pooling.mode in ("mean", "sum") and not self.pooling.recent:
            real = (history > 0).to(torch.float32)  # (W, T)
            embedded = self.history_embedding(history)  # (W, T, D); padding rows are zero
            pad = torch.zeros(n_windows, 1, embedded.shape[-1], dtype=embedded.dtype)
            sums = torch.cat([pad, embedded], 1).cumsum(1)  # (W, T + 1, D)
            counts = torch.cat([real.new_zeros(n_windows, 1), real], 1).cumsum(1)  # (W, T + 1)
            lo = (torch.arange(1, width + 1) - length).clamp_min(0)  # window start per position
            pooled = sums[:, 1:] - sums[:, lo]  # (W, T, D): sum of the last max_len inputs
            if self.pooling.mode == "mean":
                pooled = pooled / (counts[:, 1:] - counts[:, lo]).clamp_min(1.0)[..., None]
            # The tower runs on query positions only (context and padding columns are skipped).
            profile = self.profile(batch.users)[window]  # (Q, F)
            vectors = self.tower(torch.cat([pooled[queries], profile], dim=-1))  # (Q, D)
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
