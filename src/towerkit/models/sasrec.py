"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence.

The user tower is the encoder's output at the most recent position. Training uses every
position of a window as a query (see :class:`~towerkit.data.batches.SequenceBatches`): one
forward pass per window, not one per prefix.

Positions are learned per-distance attention biases (see :mod:`towerkit.nn.attention`), so every
position of a window computes exactly what its prefix alone would (tested), and extra left
padding changes nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from towerkit.models.base import DataShape, SequenceModel, SequenceSection
from towerkit.nn.attention import LayerNormPlacement, SelfAttentionBlock, causal_padding_mask
from towerkit.sections import MAX_LAYERS, MAX_LENGTH, MAX_WIDTH
from towerkit.types import FeatureTable


class SASRecConfig(SequenceSection):
    """SASRec: causal self-attention over the item sequence."""

    name: Literal["sasrec"] = "sasrec"
    n_layers: int = Field(default=2, ge=1, le=MAX_LAYERS, description="self-attention blocks")
    n_heads: int = Field(default=1, ge=1, le=MAX_LAYERS, description="attention heads")
    ffn_dim: int | None = Field(
        default=None, ge=1, le=4 * MAX_WIDTH, description="feed-forward width (4D)"
    )
    layer_norm: LayerNormPlacement = "pre"
    filter_mix: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of token mixing by a causal frequency filter (BSARec); 0: SASRec",
    )  # fmt: skip
    filter_frequencies: int = Field(
        default=3,
        ge=1,
        le=MAX_LENGTH,
        description="lowest Fourier components the frequency filter keeps",
    )

    @model_validator(mode="after")
    def _heads(self) -> SASRecConfig:
        if self.embedding_dim % self.n_heads:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must be divisible by n_heads {self.n_heads}"
            )
        return self

    def check(self, max_len: int) -> None:
        top = max_len // 2 + 1
        if self.filter_mix > 0 and self.filter_frequencies > top:
            raise ValueError(
                f"model.filter_frequencies {self.filter_frequencies} is more than a sequence "
                f"of data.max_len {max_len} has: at most {top}"
            )

    def attention(self) -> tuple[int, int] | None:
        return (self.n_heads, self.n_layers) if self.filter_mix < 1 else None


class SASRec(SequenceModel):
    """Causal Transformer user tower; the item tower is the item embedding table.

    Args:
        n_items: catalogue size (ids ``1..n_items``; 0 is padding).
        embedding_dim: D.
        max_len: the longest sequence (positions are learned up to it).
        n_layers: self-attention blocks.
        n_heads: attention heads per block.
        ffn_dim: width of the feed-forward layer (default ``4 * D``).
        dropout: on embeddings, attention weights, residual branches and the feed-forward layer.
        layer_norm: ``"pre"`` (LayerNorm before each sub-layer, plus a final one) or ``"post"``.
        share_embeddings: score items with the input embedding table (default) or a separate one.
        filter_mix: share of each block's token mixing done by a causal frequency filter
            (BSARec's "beyond self-attention"; 0 is plain SASRec, see
            :mod:`towerkit.nn.attention`).
        filter_frequencies: the lowest Fourier components the filter keeps (over ``max_len``).
        item_features, feature_dim: item side features added to each item's vector (see
            :class:`~towerkit.models.base.SequenceModel`).

    Positions enter as learned per-distance attention biases (see the module docstring), so
    extra left padding never changes a user's vector.
    """

    config_class = SASRecConfig

    @classmethod
    def from_config(cls, config: SASRecConfig, data: DataShape) -> SASRec:
        return cls(
            data.n_items,
            embedding_dim=config.embedding_dim,
            max_len=data.max_len,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            ffn_dim=config.ffn_dim,
            dropout=config.dropout,
            layer_norm=config.layer_norm,
            share_embeddings=config.share_embeddings,
            filter_mix=config.filter_mix,
            filter_frequencies=config.filter_frequencies,
            item_features=data.item_features,
            feature_dim=config.feature_dim,
        )

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = SASRecConfig.default("embedding_dim"),
        max_len: int = 200,
        n_layers: int = SASRecConfig.default("n_layers"),
        n_heads: int = SASRecConfig.default("n_heads"),
        ffn_dim: int | None = SASRecConfig.default("ffn_dim"),
        dropout: float = SASRecConfig.default("dropout"),
        layer_norm: LayerNormPlacement = SASRecConfig.default("layer_norm"),  # noqa: B008 (a str)
        share_embeddings: bool = SASRecConfig.default("share_embeddings"),
        filter_mix: float = SASRecConfig.default("filter_mix"),
        filter_frequencies: int = SASRecConfig.default("filter_frequencies"),
        item_features: FeatureTable | None = None,
        feature_dim: int = SASRecConfig.default("feature_dim"),
    ) -> None:
        super().__init__(
            n_items, embedding_dim, max_len, dropout, share_embeddings, item_features, feature_dim
        )
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(embedding_dim, n_heads, ffn_dim or 4 * embedding_dim, dropout,
                               layer_norm, max_len, filter_mix, filter_frequencies)
            for _ in range(n_layers)
        )  # fmt: skip
        self.final_norm = nn.LayerNorm(embedding_dim) if layer_norm == "pre" else nn.Identity()

    def encode_sequence(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded item ids -> ``[B, L, D]``: position ``j`` encodes items up to
        ``j``. Sequences longer than ``max_len`` keep their last ``max_len`` items."""
        return self._encode(history, last=False)

    def encode_last(self, history: torch.Tensor) -> torch.Tensor:
        """The most recent position alone, ``[B, D]``: every block but the last runs every
        position (the last one's keys and values need them), the last block only the most
        recent. Equal to ``encode_sequence(history)[:, -1]`` at about half its cost for the
        shipped depths."""
        return self._encode(history, last=True)[:, -1]

    def _encode(self, history: torch.Tensor, last: bool) -> torch.Tensor:
        history = history[:, -self.max_len :]
        real = history > 0
        x = self.input_dropout(
            self.embed_items(self.item_embedding, history)
        )  # padding rows are zero
        mask = causal_padding_mask(real)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, real, last=last and i == len(self.blocks) - 1)
        return self.final_norm(x)
