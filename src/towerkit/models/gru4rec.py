"""GRU4Rec (Hidasi et al., ICLR 2016): a recurrent user tower over the item sequence.

Histories are left-padded; a GRU would read the padding first and change its state, so each
row is rotated to start with its real items, run, and rotated back. The GRU is causal by
construction, so every position's output has seen only the items up to it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from towerkit.models.base import DataShape, SequenceModel, SequenceSection
from towerkit.sections import MAX_LAYERS, MAX_WIDTH
from towerkit.types import FeatureTable


def _rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row ``b`` of ``x [B, L, ...]`` rolled left by ``shift[b]`` positions."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device)[None, :] + shift[:, None]) % length  # (B, L)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


class GRU4RecConfig(SequenceSection):
    """GRU4Rec: a GRU over the item sequence."""

    name: Literal["gru4rec"] = "gru4rec"
    n_layers: int = Field(default=1, ge=1, le=MAX_LAYERS, description="stacked GRU layers")
    hidden_size: int | None = Field(
        default=None, ge=1, le=MAX_WIDTH, description="GRU state (default D)"
    )


class GRU4Rec(SequenceModel):
    """GRU user tower; the item tower is the item embedding table.

    Args:
        n_items: catalogue size (ids ``1..n_items``; 0 is padding).
        embedding_dim: D (item vectors and the output).
        hidden_size: GRU state width (default D).
        n_layers: stacked GRU layers.
        dropout: on the input embeddings and between GRU layers.
        max_len: the longest sequence read (older items are cut).
        share_embeddings: score items with the input embedding table (default).
        item_features, feature_dim: item side features added to each item's vector (see
            :class:`~towerkit.models.base.SequenceModel`).
    """

    config_class = GRU4RecConfig

    @classmethod
    def from_config(cls, config: GRU4RecConfig, data: DataShape) -> GRU4Rec:
        return cls(
            data.n_items,
            embedding_dim=config.embedding_dim,
            hidden_size=config.hidden_size,
            n_layers=config.n_layers,
            dropout=config.dropout,
            max_len=data.max_len,
            share_embeddings=config.share_embeddings,
            item_features=data.item_features,
            feature_dim=config.feature_dim,
        )

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = GRU4RecConfig.default("embedding_dim"),
        hidden_size: int | None = GRU4RecConfig.default("hidden_size"),
        n_layers: int = GRU4RecConfig.default("n_layers"),
        dropout: float = GRU4RecConfig.default("dropout"),
        max_len: int = 200,
        share_embeddings: bool = GRU4RecConfig.default("share_embeddings"),
        item_features: FeatureTable | None = None,
        feature_dim: int = GRU4RecConfig.default("feature_dim"),
    ) -> None:
        super().__init__(
            n_items, embedding_dim, max_len, dropout, share_embeddings, item_features, feature_dim
        )
        hidden_size = hidden_size or embedding_dim
        self.gru = nn.GRU(
            embedding_dim,
            hidden_size,
            num_layers=n_layers,
            batch_first=True,
            dropout=dropout if n_layers > 1 else 0.0,
        )
        self.project = nn.Linear(hidden_size, embedding_dim)

    def encode_sequence(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded ids -> ``[B, L, D]``: position ``j`` has read items up to
        ``j``."""
        history = history[:, -self.max_len :]
        length = history.shape[1]
        pad = length - (history > 0).sum(1)  # (B,) leading padding slots
        x = self.input_dropout(self.embed_items(self.item_embedding, history))
        # Real items first (padding moves to the end, where it cannot affect earlier outputs).
        out, _ = self.gru(_rotate(x, pad))
        return _rotate(self.project(out), (length - pad) % length)
