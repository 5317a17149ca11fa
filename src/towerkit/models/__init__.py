"""Models: each maps users and items into one vector space (see MatchingModel).

Each model file owns its config section and builds itself from it
(:meth:`MatchingModel.from_config`). :data:`MODELS` is the registry: the config's ``model``
union is built from it, so adding a model is one new file and one line below.
:func:`build_model` builds one from its config section and the encoded data's sizes and side
features; the pipeline (training) and a run directory (loading) both call it.
"""

from __future__ import annotations

from towerkit.models.base import (
    DataShape,
    MatchingModel,
    ModelSection,
    PooledHistorySection,
    SequenceModel,
    SequenceSection,
)
from towerkit.models.dssm import DSSM, DSSMConfig
from towerkit.models.gru4rec import GRU4Rec, GRU4RecConfig
from towerkit.models.hstu import HSTU, HSTUConfig
from towerkit.models.multi_interest import (
    MIND,
    ComiRecDR,
    ComiRecDRConfig,
    ComiRecSA,
    ComiRecSAConfig,
    MINDConfig,
    MultiInterestModel,
)
from towerkit.models.sasrec import SASRec, SASRecConfig
from towerkit.models.youtube_dnn import YouTubeDNN, YouTubeDNNConfig
from towerkit.types import FeatureTable

#: model name (``model.name`` in a config) -> class; the first is the default model.
MODELS: dict[str, type[MatchingModel]] = {
    model.model_name(): model
    for model in (YouTubeDNN, DSSM, SASRec, GRU4Rec, HSTU, ComiRecSA, ComiRecDR, MIND)
}

__all__ = [
    "DSSM",
    "HSTU",
    "MIND",
    "MODELS",
    "ComiRecDR",
    "ComiRecDRConfig",
    "ComiRecSA",
    "ComiRecSAConfig",
    "DSSMConfig",
    "DataShape",
    "GRU4Rec",
    "GRU4RecConfig",
    "HSTUConfig",
    "MINDConfig",
    "MatchingModel",
    "ModelSection",
    "MultiInterestModel",
    "PooledHistorySection",
    "SASRec",
    "SASRecConfig",
    "SequenceModel",
    "SequenceSection",
    "YouTubeDNN",
    "YouTubeDNNConfig",
    "build_model",
]


def build_model(
    config: ModelSection,
    *,
    n_users: int,
    n_items: int,
    max_len: int,
    user_features: FeatureTable | None = None,
    item_features: FeatureTable | None = None,
) -> MatchingModel:
    """The model a config section describes, sized for ``n_users`` and ``n_items``.

    Args:
        config: the ``model`` section of :class:`~towerkit.config.Config` (its ``name`` picks
            the model).
        max_len: the history length (``data.max_len``).
        user_features, item_features: encoded side features; models that use none ignore them.
    """
    data = DataShape(n_users, n_items, max_len, user_features, item_features)
    return MODELS[config.name].from_config(config, data)
