"""The whole config: one section per stage, the ``model`` section a union built from the model
registry (:data:`towerkit.models.MODELS`), and the checks that need two sections."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from towerkit.config.data import DataConfig
from towerkit.config.explain import ConfigError, explain_lines
from towerkit.config.scoring import (
    FullNegativesConfig,
    NegativesConfig,
    SimilarityConfig,
    TemperatureConfig,
)
from towerkit.config.training import MACHINE_KEYS, EvalConfig, TrainConfig
from towerkit.models import MODELS
from towerkit.models.base import SequenceModel
from towerkit.sections import Section, tagged

#: the ``model`` section: one shape per registered model, told apart by ``model.name``
ModelConfig = tagged("name", next(iter(MODELS)), *(model.config_class for model in MODELS.values()))
_DEFAULT_MODEL = next(iter(MODELS.values())).config_class


class Config(Section):
    """The experiment config: one section per concern, each validated (an unknown key, a value
    out of range or a cross-field conflict is one error naming the key).

    Read one with :func:`towerkit.load_config` (a YAML file or a dict); keys left out take their
    defaults, and the training page lists every key.

    >>> config = towerkit.Config()  # the defaults
    >>> config.model.name, config.similarity.name, config.temperature.value, config.train.mode
    ('youtube_dnn', 'cosine', 0.1, <Mode.LISTWISE: 'listwise'>)
    >>> print(config.to_yaml().splitlines()[0])
    data:
    """

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=_DEFAULT_MODEL)
    similarity: SimilarityConfig = Field(default_factory=SimilarityConfig)
    temperature: TemperatureConfig = Field(default_factory=TemperatureConfig)
    negatives: NegativesConfig = Field(default_factory=FullNegativesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.train.monitor_k not in self.eval.ks:
            raise ValueError(
                f"train.monitor {self.train.monitor} needs K={self.train.monitor_k} in eval.ks "
                f"{self.eval.ks}"
            )
        model = MODELS[self.model.name]
        if self.train.windows and (model.sequential or not model.encodes_positions):
            does = "always trains on windows" if model.sequential else "pools no history"
            raise ValueError(
                f"train.windows applies to models that pool a history over windows "
                f"(youtube_dnn); {self.model.name} {does}: leave train.windows at 0"
            )
        if self.train.contrastive.weight and not issubclass(model, SequenceModel):
            raise ValueError(
                f"train.contrastive compares views of a sequence: it applies to sequential "
                f"models (sasrec, gru4rec), not {self.model.name}; leave its weight at 0"
            )
        if getattr(self.model, "time_bias", False):
            if not self.data.has_time:
                raise ValueError(
                    "model.time_bias reads the times of the log, and this log has none (its "
                    "order is the file's); set model.time_bias: false"
                )
            if self.train.contrastive.weight:
                raise ValueError(
                    "train.contrastive's views carry no times, and model.time_bias needs them: "
                    "leave one of the two off"
                )
        self.model.check(self.data.max_len)
        return self

    def to_yaml(self) -> str:
        """The config as YAML, every key spelled out (as a run's ``config.yaml`` holds it)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def experiment(self) -> dict[str, Any]:
        """The config as plain data without the machine's settings (:data:`MACHINE_KEYS`):
        what a run directory saves."""
        tree = self.model_dump(mode="json")
        for section, keys in MACHINE_KEYS.items():
            for key in keys:
                tree[section].pop(key, None)
        return tree

    def machine(self) -> dict[str, Any]:
        """The machine's settings of this config (:data:`MACHINE_KEYS`), e.g.
        ``{"train": {"device": "cuda", "threads": 0, "progress": True}}``."""
        return {
            section: {key: getattr(getattr(self, section), key) for key in keys}
            for section, keys in MACHINE_KEYS.items()
        }

    def on_machine(self, **settings: Any) -> Config:
        """A copy with machine settings replaced (``device="cpu"``, ``threads=2``,
        ``progress=False``; None leaves one as it is), checked against this machine.

        Raises:
            ConfigError: a device this machine lacks, or a key that is not a machine setting.
        """
        given = {key: value for key, value in settings.items() if value is not None}
        unknown = sorted(set(given) - set(MACHINE_KEYS["train"]))
        if unknown:
            raise ConfigError(f"not machine settings: {', '.join(unknown)}")
        tree = self.model_dump()
        tree["train"].update(given)
        try:
            return Config.model_validate(tree)
        except ValidationError as err:
            raise ConfigError("; ".join(explain_lines(err, Config))) from None
