"""Models: each maps users and items into one vector space (see MatchingModel).

:func:`build_model` builds one from its config section and the encoded data's sizes and side
features; the pipeline (training) and a run directory (loading) both call it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from towerkit.models.base import MatchingModel, SequenceModel
from towerkit.models.dssm import DSSM
from towerkit.models.gru4rec import GRU4Rec
from towerkit.models.multi_interest import MIND, ComiRecDR, ComiRecSA, MultiInterestModel
from towerkit.models.sasrec import SASRec
from towerkit.models.youtube_dnn import YouTubeDNN
from towerkit.nn import PooledTowerOptions
from towerkit.types import FeatureTable

if TYPE_CHECKING:
    from towerkit.config import ModelConfig

#: model name (``model.name`` in a config) -> class.
MODELS: dict[str, type[MatchingModel]] = {
    "youtube_dnn": YouTubeDNN,
    "dssm": DSSM,
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "comirec_sa": ComiRecSA,
    "comirec_dr": ComiRecDR,
    "mind": MIND,
}

__all__ = [
    "DSSM",
    "MIND",
    "MODELS",
    "ComiRecDR",
    "ComiRecSA",
    "GRU4Rec",
    "MatchingModel",
    "MultiInterestModel",
    "SASRec",
    "SequenceModel",
    "YouTubeDNN",
    "build_model",
]


def build_model(
    config: ModelConfig,
    *,
    n_users: int,
    n_items: int,
    max_len: int,
    user_features: FeatureTable | None = None,
    item_features: FeatureTable | None = None,
) -> MatchingModel:
    """The model a config section describes, sized for ``n_users`` and ``n_items``.

    Args:
        config: one model section of :class:`~towerkit.config.Config` (its ``name`` picks it).
        max_len: the history length (``data.max_len``).
        user_features, item_features: encoded side features; models that use none ignore them.
    """
    if config.name == "sasrec":
        return SASRec(
            n_items,
            embedding_dim=config.embedding_dim,
            max_len=max_len,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            ffn_dim=config.ffn_dim,
            dropout=config.dropout,
            layer_norm=config.layer_norm,
            share_embeddings=config.share_embeddings,
            filter_mix=config.filter_mix,
            filter_frequencies=config.filter_frequencies,
            item_features=item_features,
            feature_dim=config.feature_dim,
        )
    if config.name == "gru4rec":
        return GRU4Rec(
            n_items,
            embedding_dim=config.embedding_dim,
            hidden_size=config.hidden_size,
            n_layers=config.n_layers,
            dropout=config.dropout,
            max_len=max_len,
            share_embeddings=config.share_embeddings,
            item_features=item_features,
            feature_dim=config.feature_dim,
        )
    if config.name == "comirec_sa":
        return ComiRecSA(
            n_items, embedding_dim=config.embedding_dim, interests=config.interests,
            max_len=max_len, attention_dim=config.attention_dim,
        )  # fmt: skip
    if config.name in ("comirec_dr", "mind"):
        return MODELS[config.name](
            n_items, embedding_dim=config.embedding_dim, interests=config.interests,
            max_len=max_len, iterations=config.iterations,
        )  # fmt: skip
    tower = PooledTowerOptions(
        hidden=tuple(config.hidden),
        activation=config.activation,
        dropout=config.dropout,
        pooling=config.pooling,
        recent_items=config.recent_items,
        feature_dim=config.feature_dim,
    )
    if config.name == "youtube_dnn":
        return YouTubeDNN(
            n_items,
            embedding_dim=config.embedding_dim,
            max_len=max_len,
            user_features=user_features,
            share_embeddings=config.share_embeddings,
            tower=tower,
        )
    return DSSM(
        n_users,
        n_items,
        embedding_dim=config.embedding_dim,
        id_dim=config.id_dim,
        max_len=max_len,
        user_features=user_features,
        item_features=item_features,
        use_user_id=config.use_user_id,
        tower=tower,
    )
