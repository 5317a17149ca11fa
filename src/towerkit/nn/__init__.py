"""Building blocks shared by the models: MLP, history pooling, side-feature embeddings, the
pooled-history user tower, causal self-attention and HSTU's layer."""

from towerkit.nn.attention import SelfAttentionBlock, causal_padding_mask
from towerkit.nn.hstu import HSTULayer
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
    "HSTULayer",
    "HistoryPooling",
    "PooledHistoryTower",
    "PooledTowerOptions",
    "SelfAttentionBlock",
    "activation_layer",
    "causal_padding_mask",
    "padded_embedding",
]
