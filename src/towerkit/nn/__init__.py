"""Building blocks shared by the models: MLP, history pooling, side-feature embeddings, the
pooled-history user tower and causal self-attention."""

from towerkit.nn.attention import SelfAttentionBlock, causal_padding_mask
from towerkit.nn.layers import (
    MLP,
    FeatureEmbedding,
    HistoryPooling,
    activation_layer,
    padded_embedding,
)
from towerkit.nn.towers import PooledHistoryTower, PooledTowerOptions

__all__ = [
    "MLP",
    "FeatureEmbedding",
    "HistoryPooling",
    "PooledHistoryTower",
    "PooledTowerOptions",
    "SelfAttentionBlock",
    "activation_layer",
    "causal_padding_mask",
    "padded_embedding",
]
