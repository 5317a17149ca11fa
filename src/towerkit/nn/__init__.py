"""Building blocks shared by the models: MLP, history pooling, side-feature embeddings."""

from towerkit.nn.layers import MLP, FeatureEmbedding, HistoryPooling, activation_layer

__all__ = ["MLP", "FeatureEmbedding", "HistoryPooling", "activation_layer"]
