"""Typed, validated configuration: YAML in, clear errors out.

One :class:`Config` describes a whole run (data, model, similarity, temperature, negatives,
training, evaluation). It is read by the CLI and the pipeline alike and saved, resolved, with
every run. Unknown keys are errors that list the allowed ones, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from towerkit.errors import TowerkitError
from towerkit.objectives import Mode, parse_mode


class ConfigError(TowerkitError, ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which data, which side features, which filters."""

    dataset: str = "ml-1m"
    user_features: list[str] | None = Field(
        default=None, description="user side features; null = the data set's recommended ones"
    )
    item_features: list[str] | None = Field(
        default=None, description="item side features; null = the data set's recommended ones"
    )
    min_user_interactions: int = Field(default=0, ge=0)
    min_item_interactions: int = Field(default=0, ge=0)
    min_rating: float | None = None
    max_len: int = Field(default=50, ge=1, description="history length fed to the user tower")


class ModelConfig(_Section):
    name: Literal["youtube_dnn", "dssm", "sasrec", "gru4rec"] = "youtube_dnn"
    embedding_dim: int = Field(default=64, ge=1)
    id_dim: int = Field(default=64, ge=1, description="DSSM: id and history embedding width")
    hidden: list[int] = Field(default_factory=lambda: [256])
    activation: Literal["relu", "gelu", "silu", "tanh", "prelu"] = "gelu"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: Literal["mean", "sum", "recency", "attention"] = "recency"
    feature_dim: int = Field(default=16, ge=1)
    share_embeddings: bool | None = Field(
        default=None,
        description="tie input and output item tables (default: no for YouTubeDNN, yes for "
        "SASRec and GRU4Rec)",
    )
    recent_items: int = Field(
        default=0, ge=0, description="also feed the last k history embeddings in order"
    )
    use_user_id: bool = Field(default=True, description="DSSM: embed the user id")
    n_layers: int = Field(default=2, ge=1, description="SASRec blocks / GRU4Rec GRU layers")
    n_heads: int = Field(default=1, ge=1, description="SASRec attention heads")
    ffn_dim: int | None = Field(default=None, ge=1, description="SASRec feed-forward width (4D)")
    layer_norm: Literal["pre", "post"] = Field(default="pre", description="SASRec LayerNorm")
    hidden_size: int | None = Field(default=None, ge=1, description="GRU4Rec state (default D)")


class SimilarityConfig(_Section):
    name: Literal["cosine", "dot", "euclidean"] = "cosine"
    normalize: bool = Field(default=False, description="euclidean on L2-normalised vectors")


class TemperatureConfig(_Section):
    value: float = Field(default=0.1, gt=0)
    learnable: bool = False
    min_value: float = Field(default=0.01, gt=0)
    max_value: float = Field(default=10.0, gt=0)


class NegativesConfig(_Section):
    kind: Literal["full", "sampled", "in_batch", "mixed"] = "full"
    n: int = Field(default=256, ge=1, description="sampled negatives per query")
    sampler: Literal["uniform", "popularity", "log_popularity"] = Field(
        default="uniform",
        description="catalogue distribution of sampled negatives; popularity suits list-wise "
        "training with log-q, uniform point- and pair-wise training",
    )
    alpha: float = Field(default=0.75, ge=0.0, description="popularity exponent")
    shared: bool | None = Field(
        default=None,
        description="one sampled set for the whole batch, scored with one matrix product "
        "(sequential models and train.windows: one set per sequence, shared by its positions); "
        "null = shared for sequences (n per position would be [positions, n, D] vectors), "
        "per query otherwise",
    )
    logq: bool | None = Field(
        default=None,
        description="subtract log sampling probability; null = on for list-wise training only "
        "(the correction makes a sampled softmax estimate the full one; BCE and BPR have no "
        "softmax to correct)",
    )


class TrainConfig(_Section):
    mode: Mode = Mode.LISTWISE
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(
        default=1024, ge=1, description="samples per batch (sequential models: sequences)"
    )
    windows: int = Field(
        default=0,
        ge=0,
        description="YouTubeDNN: train on windows of this many positions per user (one pass "
        "each; as many windows a batch as hold batch_size samples on average) instead of "
        "independent samples",
    )
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    clip_norm: float = Field(default=1.0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup: int = Field(default=0, ge=0)
    patience: int = Field(default=3, ge=0)
    seed: int = 0
    device: str = "cpu"
    threads: int = Field(default=0, ge=0, description="torch threads; 0 = torch's default")
    progress: bool = True

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Mode:
        return parse_mode(value)


class EvalConfig(_Section):
    ks: list[int] = Field(default_factory=lambda: [10, 50])
    max_bytes: int = Field(default=256 * 2**20, ge=1 << 16)
    batch_size: int = Field(default=1024, ge=1)
    index: Literal["exact", "annoy", "faiss-flat", "faiss-hnsw", "faiss-ivf"] = Field(
        default="exact",
        description="validation ranks through this index every epoch (test is always exact)",
    )
    index_options: dict[str, Any] = Field(
        default_factory=dict, description="options of that index, e.g. {n_trees: 50}"
    )

    @model_validator(mode="after")
    def _index(self) -> EvalConfig:
        from towerkit.index import make_index

        make_index(self.index, **self.index_options)  # a bad option fails here, not mid-run
        return self

    @field_validator("ks")
    @classmethod
    def _ks(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")
        if 10 not in value:
            raise ValueError("ks must contain 10 (early stopping watches NDCG@10)")
        return sorted(set(value))


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    similarity: SimilarityConfig = Field(default_factory=SimilarityConfig)
    temperature: TemperatureConfig = Field(default_factory=TemperatureConfig)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _allowed(model: type[BaseModel], path: tuple) -> list[str]:
    """The keys allowed at ``path`` inside ``model``."""
    for key in path:
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _explain(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed(Config, loc[:-1]))
            lines.append(f"{where}: unknown key; allowed here: {allowed}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message} (got {item.get('input')!r})")
    return f"{source}: invalid configuration:\n  " + "\n  ".join(lines)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.epochs=3", "model.hidden=[128, 64]"]`` -> typed (key, value) pairs (YAML)."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        pairs.append((key.strip(), value))
    return pairs


def config_from_dict(tree: dict, overrides: list[str] = (), source: str = "config") -> Config:
    tree = copy.deepcopy(dict(tree or {}))  # overrides never leak into the caller's dict
    for key, value in parse_overrides(list(overrides)):
        _set_path(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides, validate.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML, an unknown key (the message lists
            the allowed ones) or a value of the wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of sections, not {type(tree).__name__}"
        )
    return config_from_dict(tree or {}, overrides, source=str(path))
