"""Typed, validated configuration: YAML in, clear errors out.

One :class:`Config` describes a whole run (data, model, similarity, temperature, negatives,
training, evaluation). It is read by the CLI, the pipeline and a run directory alike, and a run
saves it, resolved, without the machine's settings (:data:`MACHINE_KEYS`). It says no early and
clearly:

- an unknown key is an error that lists the keys allowed there;
- the ``model`` section has one shape per model (a union tagged by ``model.name``, built from
  the model registry: each model file owns its section), so a key the chosen model does not use
  (``n_heads`` for ``youtube_dnn``) is an unknown key; the same holds for ``negatives`` (tagged
  by ``kind``) and ``data.split`` (tagged by ``kind``);
- the choices (activations, poolings, similarities, samplers, index names, ...) are the ones
  their components define;
- cross-field checks (a temperature outside its range, ``train.windows`` for a model that does
  not pool a history, a ``train.monitor`` metric the evaluation does not report) fail here,
  before any data is read; a device this machine lacks fails a config about to train, never a
  saved run's.

The package by section: :mod:`~towerkit.config.data`, :mod:`~towerkit.config.scoring`,
:mod:`~towerkit.config.training`, the root :mod:`~towerkit.config.schema`, the error explainer
:mod:`~towerkit.config.explain` and :mod:`~towerkit.config.loading` (files and overrides).
"""

from towerkit.config.data import (
    ColumnsConfig,
    DataConfig,
    FeatureConfig,
    HeldOutUsersSplit,
    LastFractionSplit,
    LeaveOneOutSplit,
    SideTableConfig,
    SplitConfig,
    TemporalSplit,
)
from towerkit.config.explain import ConfigError
from towerkit.config.loading import (
    config_from_dict,
    load_config,
    parse_overrides,
    read_config_tree,
    resolve_paths,
    set_key,
)
from towerkit.config.schema import Config, ModelConfig
from towerkit.config.scoring import (
    FullNegativesConfig,
    InBatchNegativesConfig,
    MixedNegativesConfig,
    NegativesConfig,
    SampledNegativesConfig,
    SimilarityConfig,
    TemperatureConfig,
)
from towerkit.config.training import (
    MACHINE_KEYS,
    ContrastiveConfig,
    EvalConfig,
    TrainConfig,
    device_problem,
)
from towerkit.models import (
    ComiRecDRConfig,
    ComiRecSAConfig,
    DSSMConfig,
    GRU4RecConfig,
    HSTUConfig,
    MINDConfig,
    SASRecConfig,
    YouTubeDNNConfig,
)

__all__ = [
    "MACHINE_KEYS",
    "ColumnsConfig",
    "ComiRecDRConfig",
    "ComiRecSAConfig",
    "Config",
    "ConfigError",
    "ContrastiveConfig",
    "DSSMConfig",
    "DataConfig",
    "EvalConfig",
    "FeatureConfig",
    "FullNegativesConfig",
    "GRU4RecConfig",
    "HSTUConfig",
    "HeldOutUsersSplit",
    "InBatchNegativesConfig",
    "LastFractionSplit",
    "LeaveOneOutSplit",
    "MINDConfig",
    "MixedNegativesConfig",
    "ModelConfig",
    "NegativesConfig",
    "SASRecConfig",
    "SampledNegativesConfig",
    "SideTableConfig",
    "SimilarityConfig",
    "SplitConfig",
    "TemperatureConfig",
    "TemporalSplit",
    "TrainConfig",
    "YouTubeDNNConfig",
    "config_from_dict",
    "device_problem",
    "load_config",
    "parse_overrides",
    "read_config_tree",
    "resolve_paths",
    "set_key",
]
