"""Building blocks shared by the models: MLP, history pooling, side-feature embeddings."""

from towerkit.nn.layers import (
    MLP,
    FeatureEmbedding,
    HistoryPooling,
    activation_layer,
    padded_embedding,
)

__all__ = ["MLP", "FeatureEmbedding", "HistoryPooling", "activation_layer", "padded_embedding"]
