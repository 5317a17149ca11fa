"""HSTU (Zhai et al., ICML 2024): the generative recommenders' sequence encoder, as a user tower.

A stack of :class:`~towerkit.nn.hstu.HSTULayer` (pointwise aggregated attention, gating, a
relative position bias, no feed-forward block) over the item embeddings scaled by sqrt(D). The
user tower is the output at the most recent position; training uses every position of a window,
as SASRec does. Written from the paper and Meta's reference code (``generative-recommenders``,
``modeling/sequential/hstu.py``), not taken from it; the reference trains with sampled softmax
and L2-normalised vectors, which here are ``negatives`` and ``similarity: cosine``.

``time_bias: true`` adds the paper's relative *time* bias (bucketed log time gaps, see
:mod:`towerkit.nn.hstu`). Each position's query is made at the time of the item it predicts,
as in the reference: in a training window, its target's time; for a user's query, the time of
the stage's target (``Batch.at``). Such a model reads times wherever it encodes a user:
training, evaluation, the run's stored user vectors, retrieval, and the exported tower (a
second input, ``times``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from towerkit.models.base import DataShape, SequenceModel, SequenceSection
from towerkit.nn.hstu import HSTULayer, time_buckets
from towerkit.sections import MAX_LAYERS, MAX_WIDTH
from towerkit.types import Batch, FeatureTable, SequenceBatch


class HSTUConfig(SequenceSection):
    """HSTU: pointwise aggregated attention with gating over the item sequence."""

    name: Literal["hstu"] = "hstu"
    n_layers: int = Field(default=2, ge=1, le=MAX_LAYERS, description="HSTU layers")
    n_heads: int = Field(default=1, ge=1, le=MAX_LAYERS, description="attention heads")
    attention_dim: int | None = Field(
        default=None, ge=1, le=MAX_WIDTH, description="query and key width per head (D / heads)"
    )
    value_dim: int | None = Field(
        default=None, ge=1, le=MAX_WIDTH, description="value and gate width per head (D / heads)"
    )
    time_bias: bool = Field(
        default=False,
        description="a relative time bias: a learned value per bucket of log time gap between "
        "a query and each item of its history (needs a log with times)",
    )

    @model_validator(mode="after")
    def _heads(self) -> HSTUConfig:
        if (self.attention_dim is None or self.value_dim is None) and (
            self.embedding_dim % self.n_heads
        ):
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must be divisible by n_heads {self.n_heads} "
                "unless attention_dim and value_dim are given"
            )
        return self

    def attention(self) -> tuple[int, int] | None:
        return self.n_heads, self.n_layers


class HSTU(SequenceModel):
    """HSTU user tower; the item tower is the item embedding table.

    Args:
        n_items: catalogue size (ids ``1..n_items``; 0 is padding).
        embedding_dim: D.
        max_len: the longest sequence (distances are learned up to it; the attention's
            normaliser).
        n_layers: HSTU layers.
        n_heads: attention heads per layer.
        attention_dim, value_dim: query/key and value/gate widths per head (default D / H).
        time_bias: a relative time bias in every layer (then every encoder reads times).
        dropout: on the input embeddings and on each layer's gated output.
        share_embeddings: score items with the input embedding table (default).
        item_features, feature_dim: item side features added to each item's vector (see
            :class:`~towerkit.models.base.SequenceModel`).
    """

    config_class = HSTUConfig

    @classmethod
    def from_config(cls, config: HSTUConfig, data: DataShape) -> HSTU:
        return cls(
            data.n_items,
            embedding_dim=config.embedding_dim,
            max_len=data.max_len,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            attention_dim=config.attention_dim,
            value_dim=config.value_dim,
            time_bias=config.time_bias,
            dropout=config.dropout,
            share_embeddings=config.share_embeddings,
            item_features=data.item_features,
            feature_dim=config.feature_dim,
        )

    def __init__(
        self,
        n_items: int,
        *,
        embedding_dim: int = HSTUConfig.default("embedding_dim"),
        max_len: int = 200,
        n_layers: int = HSTUConfig.default("n_layers"),
        n_heads: int = HSTUConfig.default("n_heads"),
        attention_dim: int | None = HSTUConfig.default("attention_dim"),
        value_dim: int | None = HSTUConfig.default("value_dim"),
        time_bias: bool = HSTUConfig.default("time_bias"),
        dropout: float = HSTUConfig.default("dropout"),
        share_embeddings: bool = HSTUConfig.default("share_embeddings"),
        item_features: FeatureTable | None = None,
        feature_dim: int = HSTUConfig.default("feature_dim"),
    ) -> None:
        if (attention_dim is None or value_dim is None) and embedding_dim % n_heads:
            raise ValueError(
                f"embedding_dim {embedding_dim} must be divisible by n_heads {n_heads}"
            )
        super().__init__(
            n_items, embedding_dim, max_len, dropout, share_embeddings, item_features, feature_dim
        )
        width = embedding_dim // n_heads
        self.layers = torch.nn.ModuleList(
            HSTULayer(embedding_dim, n_heads, attention_dim or width, value_dim or width, dropout,
                      max_len, time_bias)
            for _ in range(n_layers)
        )  # fmt: skip
        self.scale = embedding_dim**0.5
        self.reads_times = time_bias

    def encode_sequence(
        self,
        history: torch.Tensor,
        times: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, L]`` left-padded item ids -> ``[B, L, D]``: position ``j`` encodes items up to
        ``j``. Sequences longer than ``max_len`` keep their last ``max_len`` items. With a time
        bias: ``times [B, L]``, the items' times, and ``at [B, L]``, when each position's query
        is made (its target's time)."""
        return self._encode(history, False, times, at)

    def encode_last(
        self,
        history: torch.Tensor,
        times: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The most recent position alone, ``[B, D]``: the last layer computes only its gate
        and query (every position's keys and values still enter). With a time bias:
        ``times [B, L]`` and ``at [B]``, when the query is made; every earlier position is
        queried at the time of the item after it, as in training."""
        if at is not None and times is not None:
            at = torch.cat([times[:, 1:], at[:, None].to(times.dtype)], dim=1)
        return self._encode(history, True, times, at)[:, -1]

    def encode_positions(self, batch: SequenceBatch) -> torch.Tensor:
        return self.encode_sequence(batch.history, batch.times, batch.at)

    def encode_users(self, batch: Batch) -> torch.Tensor:
        return self.encode_last(batch.history, batch.times, batch.at)

    def _encode(
        self,
        history: torch.Tensor,
        last: bool,
        times: torch.Tensor | None,
        at: torch.Tensor | None,
    ) -> torch.Tensor:
        history = history[:, -self.max_len :]
        buckets = None
        if self.reads_times:
            if times is None or at is None:
                raise ValueError(
                    "this HSTU has a time bias (model.time_bias): it needs the history's times "
                    "and the time each query is made"
                )
            buckets = time_buckets(at[:, -self.max_len :], times[:, -self.max_len :])
        real = history > 0
        x = self.input_dropout(self.embed_items(self.item_embedding, history) * self.scale)
        for i, layer in enumerate(self.layers):
            x = layer(x, real, last=last and i == len(self.layers) - 1, buckets=buckets)
        return x
