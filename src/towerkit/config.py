"""Typed, validated configuration: YAML in, clear errors out.

One :class:`Config` describes a whole run (data, model, similarity, temperature, negatives,
training, evaluation). It is read by the CLI, the pipeline and a run directory alike and saved,
resolved, with every run. It says no early and clearly:

- an unknown key is an error that lists the keys allowed there;
- the ``model`` section has one shape per model (a union tagged by ``model.name``), so a key the
  chosen model does not use (``n_heads`` for ``youtube_dnn``) is an unknown key; the same holds
  for ``negatives`` (tagged by ``kind``) and ``data.split`` (tagged by ``kind``);
- the choices (activations, poolings, similarities, samplers, index names, ...) are the ones
  their components define, imported from them;
- cross-field checks (a temperature outside its range, ``train.windows`` for a model that does
  not pool a history, a ``train.monitor`` metric the evaluation does not report) fail here,
  before any data is read.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from towerkit.data.readers import Format, TimeUnit
from towerkit.errors import TowerkitError
from towerkit.index import IndexKind
from towerkit.negatives import SamplerKind
from towerkit.nn.attention import LayerNormPlacement
from towerkit.nn.layers import Activation, Pooling
from towerkit.objectives import Mode, parse_mode
from towerkit.similarity import SimilarityName
from towerkit.types import FeatureKind


class ConfigError(TowerkitError, ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""


class _Section(BaseModel):
    # No NaN or infinity anywhere: lr=.inf would pass as a "positive" number and train to NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Each tagged union's member classes by tag, and the key that holds the tag.
_UNIONS: dict[tuple[type, ...], tuple[str, dict[str, type[_Section]]]] = {}


def _tagged(key: str, default: str, *members: type[_Section]) -> Any:
    """A union of sections told apart by ``key`` (``default`` when the key is left out)."""
    by_tag = {member.model_fields[key].default: member for member in members}

    def tag(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get(key, default)
        return getattr(value, key, None)

    _UNIONS[members] = (key, by_tag)
    tagged = tuple(Annotated[member, Tag(name)] for name, member in by_tag.items())
    return Annotated[typing.Union[tagged], Discriminator(tag)]  # noqa: UP007


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


class LeaveOneOutSplit(_Section):
    """DESIGN.md's protocol: per user, the last interaction tests, the one before validates."""

    kind: Literal["leave_one_out"] = "leave_one_out"


class TemporalSplit(_Section):
    """A global time cut: interactions at ``t >= test_start`` test, ``valid_start <= t <
    test_start`` validate, earlier ones train. Times are epoch seconds or ISO dates."""

    kind: Literal["temporal"] = "temporal"
    test_start: int
    valid_start: int | None = Field(default=None, description="null: no validation stage")

    @field_validator("test_start", "valid_start", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an ISO date (2003-01-01 or 2003-01-01T12:00:00)"
                ) from None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime(value.year, value.month, value.day)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return int(value.timestamp())
        return value

    @model_validator(mode="after")
    def _order(self) -> TemporalSplit:
        if self.valid_start is not None and self.valid_start > self.test_start:
            raise ValueError(
                f"valid_start ({self.valid_start}) must not come after test_start "
                f"({self.test_start})"
            )
        return self


class LastFractionSplit(_Section):
    """Per user, the last ``test`` share of the interactions tests and the ``valid`` share
    before it validates (each rounded up: a user with any interaction has a test target)."""

    kind: Literal["last_fraction"] = "last_fraction"
    valid: float = Field(default=0.1, ge=0.0, lt=1.0)
    test: float = Field(default=0.1, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum(self) -> LastFractionSplit:
        if self.valid + self.test >= 1:
            raise ValueError(f"valid + test = {self.valid + self.test:g} leaves nothing to train")
        return self


class HeldOutUsersSplit(_Section):
    """ComiRec's protocol (Cen et al., KDD 2020): users are divided (seeded) into training,
    validation and test users; validation and test users never train, the first ``history``
    share of their interactions is the input of the rest, their targets. Pair it with
    ``eval.mask_seen: false`` and ``eval.ks: [20, 50]`` to report as the paper does."""

    kind: Literal["held_out_users"] = "held_out_users"
    valid: float = Field(default=0.1, ge=0.0, lt=1.0, description="share of validation users")
    test: float = Field(default=0.1, gt=0.0, lt=1.0, description="share of test users")
    history: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="held-out users: input share (the rest: targets)"
    )
    seed: int = Field(default=0, description="seeds the division of users")

    @model_validator(mode="after")
    def _sum(self) -> HeldOutUsersSplit:
        if self.valid + self.test >= 1:
            raise ValueError(f"valid + test = {self.valid + self.test:g} leaves no user to train")
        return self


SplitConfig = _tagged(
    "kind", "leave_one_out", LeaveOneOutSplit, TemporalSplit, LastFractionSplit, HeldOutUsersSplit
)


class ColumnsConfig(_Section):
    """Which column of a log file holds each role."""

    user: str = "user"
    item: str = "item"
    timestamp: str | None = Field(
        default="timestamp", description="null: no times; the file order is the time order"
    )
    rating: str | None = None
    weight: str | None = Field(
        default=None, description="a positive weight per interaction: it weights its loss"
    )
    timestamp_unit: TimeUnit = Field(default="s", description="of numeric timestamps")


class FeatureConfig(_Section):
    """How a side-table column is encoded."""

    kind: FeatureKind = "categorical"
    sep: str = Field(default="|", description="multi: the separator between values in text")


class SideTableConfig(_Section):
    """A user or item side table of a log given by path."""

    path: Path
    key: str = Field(description="the column of the user or item id")
    format: Format | None = None
    sep: str | None = None
    features: dict[str, FeatureKind | FeatureConfig] = Field(
        default_factory=dict,
        description="column -> categorical | numeric | multi (or {kind: multi, sep: ','})",
    )
    title: str | None = Field(default=None, description="items: the column to show by ids")

    @field_validator("path", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    def feature_configs(self) -> dict[str, FeatureConfig]:
        return {
            name: spec if isinstance(spec, FeatureConfig) else FeatureConfig(kind=spec)
            for name, spec in self.features.items()
        }


_PATH_ONLY = ("format", "sep", "columns", "users", "items")


class DataConfig(_Section):
    """Which data (a known data set, or a log of one's own), which side features, which
    filters, which split."""

    dataset: str | None = Field(
        default=None, description="a known data set (towerkit data list); default ml-1m"
    )
    path: Path | None = Field(
        default=None, description="a log file or a directory of Parquet shards, instead"
    )
    format: Format | None = Field(
        default=None, description="csv, tsv, parquet, jsonl or sequences; default: the suffix"
    )
    sep: str | None = None
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    users: SideTableConfig | None = None
    items: SideTableConfig | None = None
    user_features: list[str] | None = Field(
        default=None,
        description="user side features; null = the data set's recommended ones (own logs: all "
        "declared in users.features)",
    )
    item_features: list[str] | None = Field(
        default=None,
        description="item side features; null = the data set's recommended ones (own logs: all "
        "declared in items.features)",
    )
    min_user_interactions: int = Field(default=0, ge=0)
    min_item_interactions: int = Field(default=0, ge=0)
    min_rating: float | None = None
    max_len: int = Field(default=50, ge=1, description="history length fed to the user tower")
    split: SplitConfig = Field(default_factory=LeaveOneOutSplit)

    @model_validator(mode="before")
    @classmethod
    def _default_dataset(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("dataset") is None and not values.get("path"):
            return {**values, "dataset": "ml-1m"}
        return values

    @field_validator("dataset")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        from towerkit.datasets import DATASETS

        if value is not None and value not in DATASETS:
            raise ValueError(f"unknown data set; known data sets: {', '.join(sorted(DATASETS))}")
        return value

    @field_validator("path", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset is not None and self.path is not None:
            raise ValueError("give either dataset (a known data set) or path (a log), not both")
        if self.dataset is not None:
            defaults = {"columns": ColumnsConfig()}
            given = [k for k in _PATH_ONLY if getattr(self, k) != defaults.get(k)]
            if given:
                raise ValueError(
                    f"{', '.join(given)} describe a log given by path; data set "
                    f"{self.dataset} knows its own"
                )
            has_time = _known_has_time(self.dataset)
        else:
            has_time = self.columns.timestamp is not None and self.format != "sequences"
            if self.min_rating is not None and self.columns.rating is None:
                raise ValueError("min_rating needs a rating column: set columns.rating")
            for side, names in (("users", self.user_features), ("items", self.item_features)):
                table = getattr(self, side)
                declared = set(table.features) if table else set()
                missing = sorted(set(names or ()) - declared)
                if missing:
                    raise ValueError(
                        f"{side[:-1]}_features {missing} are not declared in {side}.features "
                        f"({', '.join(sorted(declared)) or 'none declared'})"
                    )
        if self.split.kind == "temporal" and not has_time:
            raise ValueError(
                "a temporal split needs timestamps, and this log has none (its order is the "
                "file's); use leave_one_out or last_fraction"
            )
        return self


def _known_has_time(name: str) -> bool:
    from towerkit.datasets import DATASETS

    return DATASETS[name].has_time


# --------------------------------------------------------------------------------------------
# model: one section per model
# --------------------------------------------------------------------------------------------


class _PooledHistoryModel(_Section):
    """The keys of models with a pooled-history user tower (YouTubeDNN, DSSM)."""

    embedding_dim: int = Field(default=64, ge=1)
    hidden: list[int] = Field(default_factory=lambda: [256])
    activation: Activation = "gelu"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: Pooling = "recency"
    recent_items: int = Field(
        default=0, ge=0, description="also feed the last k history embeddings in order"
    )
    feature_dim: int = Field(default=16, ge=1, description="embedding width of each feature")

    @field_validator("hidden")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if any(width < 1 for width in value):
            raise ValueError("hidden widths must be positive integers")
        return value


class YouTubeDNNConfig(_PooledHistoryModel):
    """YouTubeDNN: MLP(pooled history ++ user features) against an item embedding table."""

    name: Literal["youtube_dnn"] = "youtube_dnn"
    share_embeddings: bool = Field(
        default=False, description="one table for history inputs and item vectors"
    )


class DSSMConfig(_PooledHistoryModel):
    """DSSM: MLP(pooled history ++ user id ++ user features) against MLP(item id ++ item
    features)."""

    name: Literal["dssm"] = "dssm"
    id_dim: int = Field(default=64, ge=1, description="id and history embedding width")
    use_user_id: bool = Field(default=True, description="embed the user id")


class _SequenceModel(_Section):
    embedding_dim: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    share_embeddings: bool = Field(
        default=True, description="score items with the input embedding table"
    )
    feature_dim: int = Field(
        default=16, ge=1, description="width of each item feature (data.item_features) added"
    )


class SASRecConfig(_SequenceModel):
    """SASRec: causal self-attention over the item sequence."""

    name: Literal["sasrec"] = "sasrec"
    n_layers: int = Field(default=2, ge=1, description="self-attention blocks")
    n_heads: int = Field(default=1, ge=1, description="attention heads")
    ffn_dim: int | None = Field(default=None, ge=1, description="feed-forward width (4D)")
    layer_norm: LayerNormPlacement = "pre"
    filter_mix: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of token mixing by a causal frequency filter (BSARec); 0: SASRec",
    )  # fmt: skip
    filter_frequencies: int = Field(
        default=3, ge=1, description="lowest Fourier components the frequency filter keeps"
    )

    @model_validator(mode="after")
    def _heads(self) -> SASRecConfig:
        if self.embedding_dim % self.n_heads:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must be divisible by n_heads {self.n_heads}"
            )
        return self


class GRU4RecConfig(_SequenceModel):
    """GRU4Rec: a GRU over the item sequence."""

    name: Literal["gru4rec"] = "gru4rec"
    n_layers: int = Field(default=1, ge=1, description="stacked GRU layers")
    hidden_size: int | None = Field(default=None, ge=1, description="GRU state (default D)")


class _MultiInterestModel(_Section):
    embedding_dim: int = Field(default=64, ge=1)
    interests: int = Field(default=4, ge=1, description="K: vectors per user")


class ComiRecSAConfig(_MultiInterestModel):
    """ComiRec-SA: K self-attention heads over the history."""

    name: Literal["comirec_sa"] = "comirec_sa"
    attention_dim: int | None = Field(default=None, ge=1, description="W1's width (4D)")


class ComiRecDRConfig(_MultiInterestModel):
    """ComiRec-DR: dynamic routing, one bilinear map per interest."""

    name: Literal["comirec_dr"] = "comirec_dr"
    iterations: int = Field(default=3, ge=1, description="routing iterations")


class MINDConfig(_MultiInterestModel):
    """MIND: behaviour-to-interest routing with a shared bilinear map."""

    name: Literal["mind"] = "mind"
    iterations: int = Field(default=3, ge=1, description="routing iterations")


ModelConfig = _tagged(
    "name", "youtube_dnn", YouTubeDNNConfig, DSSMConfig, SASRecConfig, GRU4RecConfig,
    ComiRecSAConfig, ComiRecDRConfig, MINDConfig,
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# scoring and negatives
# --------------------------------------------------------------------------------------------


class SimilarityConfig(_Section):
    name: SimilarityName = "cosine"
    normalize: bool = Field(default=False, description="euclidean on L2-normalised vectors")

    @model_validator(mode="after")
    def _normalize(self) -> SimilarityConfig:
        if self.normalize and self.name != "euclidean":
            raise ValueError(
                f"normalize applies to euclidean only ({self.name} "
                f"{'always normalises' if self.name == 'cosine' else 'never does'})"
            )
        return self


class TemperatureConfig(_Section):
    value: float = Field(default=0.1, gt=0)
    learnable: bool = False
    min_value: float = Field(default=0.01, gt=0)
    max_value: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> TemperatureConfig:
        if not self.min_value <= self.value <= self.max_value:
            raise ValueError(
                f"value {self.value} must lie in [min_value, max_value] = "
                f"[{self.min_value}, {self.max_value}]"
            )
        return self


class _Negatives(_Section):
    exclude_seen: bool | Literal["window"] = Field(
        default=False,
        description="items a query has already seen are not its negatives, as the evaluation "
        "masks them from every ranking: true, everything its user saw before it; window, only "
        "the items of its window of positions (per-sample batches: its history of max_len)",
    )


class FullNegativesConfig(_Negatives):
    """Every catalogue item is a negative: the exact softmax."""

    kind: Literal["full"] = "full"


class _DrawnNegatives(_Negatives):
    logq: bool | None = Field(
        default=None,
        description="subtract log sampling probability; null = on for list-wise training only "
        "(the correction makes a sampled softmax estimate the full one; BCE and BPR have no "
        "softmax to correct)",
    )
    mask_hits: bool = Field(
        default=True, description="a candidate equal to the query's positive is not a negative"
    )


class InBatchNegativesConfig(_DrawnNegatives):
    """The batch's other positives are each query's negatives."""

    kind: Literal["in_batch"] = "in_batch"


class _SampledNegatives(_DrawnNegatives):
    n: int = Field(default=256, ge=1, description="sampled negatives per query")
    sampler: SamplerKind = Field(
        default="uniform",
        description="catalogue distribution of sampled negatives; popularity suits list-wise "
        "training with log-q, uniform point- and pair-wise training",
    )
    alpha: float = Field(default=0.75, ge=0.0, description="popularity exponent")
    shared: bool | None = Field(
        default=None,
        description="one sampled set for the whole batch, scored with one matrix product "
        "(windows of positions: one set per window, shared by its positions); null = shared "
        "for windows (n per position would be [positions, n, D] vectors), per query otherwise",
    )


class SampledNegativesConfig(_SampledNegatives):
    """N items drawn from the catalogue."""

    kind: Literal["sampled"] = "sampled"


class MixedNegativesConfig(_SampledNegatives):
    """In-batch negatives plus N sampled ones."""

    kind: Literal["mixed"] = "mixed"


NegativesConfig = _tagged(
    "kind",
    "full",
    FullNegativesConfig,
    InBatchNegativesConfig,
    SampledNegativesConfig,
    MixedNegativesConfig,
)


# --------------------------------------------------------------------------------------------
# training and evaluation
# --------------------------------------------------------------------------------------------

_METRIC = re.compile(r"^(hr|ndcg|mrr|recall|precision)@([1-9][0-9]*)$")


class TrainConfig(_Section):
    """How to train (read by :class:`~towerkit.training.Trainer` as it is)."""

    mode: Mode = Mode.LISTWISE
    epochs: int = Field(default=10, ge=1, description="the most epochs to run")
    batch_size: int = Field(
        default=1024, ge=1, description="samples per batch (sequential models: windows)"
    )
    windows: int = Field(
        default=0,
        ge=0,
        description="YouTubeDNN: train on windows of this many positions per user (one pass "
        "each; as many windows a batch as hold batch_size samples on average) instead of "
        "independent samples",
    )
    lr: float = Field(default=1e-3, gt=0, description="AdamW's learning rate")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW's weight decay")
    clip_norm: float = Field(default=1.0, ge=0, description="gradient-norm clipping (0: off)")
    sparse: bool = Field(
        default=False,
        description="id embedding tables get sparse gradients and SparseAdam: a step updates "
        "only the rows it touched, so its cost does not grow with the catalogue (large "
        "catalogues; weight decay and clip_norm then apply to the other parameters only)",
    )
    schedule: Literal["constant", "cosine", "linear"] = Field(
        default="constant", description="learning rate after warm-up (cosine, linear: to 0)"
    )
    warmup: int = Field(default=0, ge=0, description="steps of linear warm-up")
    patience: int = Field(
        default=3,
        ge=0,
        description="epochs without a better monitor value before stopping (0: never stop "
        "early; the best epoch's weights are still kept)",
    )
    monitor: str = Field(
        default="ndcg@10", description="the validation metric that picks the best epoch"
    )
    seed: int = Field(default=0, description="seeds initialisation, dropout and negatives")
    device: str = "cpu"
    threads: int = Field(default=0, ge=0, description="torch threads; 0 = torch's default")
    progress: bool = True

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Mode:
        return parse_mode(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str, info: ValidationInfo) -> str:
        import torch

        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError("not a torch device; use cpu, cuda, cuda:N or mps") from None
        if (info.context or {}).get("machine", True):  # a saved run's config is not checked
            problem = device_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value: str) -> str:
        if not _METRIC.match(value):
            raise ValueError(
                "the monitor is a validation metric such as ndcg@10, hr@50 or mrr@10 "
                "(hr, ndcg, mrr, recall or precision at a K of eval.ks)"
            )
        return value

    @property
    def monitor_k(self) -> int:
        return int(self.monitor.partition("@")[2])


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine (None: it can). Only a config about to
    train asks: a saved run's config names the machine it was trained on, not this one."""
    import torch

    kind = torch.device(device)
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }.get(kind.type, False)
    if not available:
        return f"this machine has no {kind.type} device; use cpu"
    count = torch.cuda.device_count()
    if kind.type == "cuda" and kind.index is not None and kind.index >= count:
        return f"this machine has {count} CUDA device(s)"
    return None


#: Settings of the machine a config trains on, not of the experiment: a run directory saves its
#: config without them (``run.json`` records where it was trained), so a run trained on a GPU
#: loads, recommends, exports and serves on a machine without one.
MACHINE_KEYS: dict[str, tuple[str, ...]] = {"train": ("device", "threads", "progress")}


class EvalConfig(_Section):
    ks: list[int] = Field(default_factory=lambda: [10, 50])
    max_bytes: int = Field(default=256 * 2**20, ge=1 << 16)
    batch_size: int = Field(default=1024, ge=1)
    index: IndexKind = Field(
        default="exact",
        description="validation ranks through this index every epoch (test is always exact)",
    )
    index_options: dict[str, Any] = Field(
        default_factory=dict, description="options of that index, e.g. {n_trees: 50}"
    )
    sample_users: int = Field(
        default=0,
        ge=0,
        description="rank a seeded sample of this many users at each stage (0: every user); "
        "for user bases and catalogues too large to rank everyone every epoch",
    )
    sample_seed: int = Field(default=0, description="the seed of that sample")
    mask_seen: bool = Field(
        default=True,
        description="mask the items a user saw before the stage from their ranking (DESIGN.md's "
        "protocol); false ranks them too (ComiRec's protocol)",
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
        return sorted(set(value))


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=YouTubeDNNConfig)
    similarity: SimilarityConfig = Field(default_factory=SimilarityConfig)
    temperature: TemperatureConfig = Field(default_factory=TemperatureConfig)
    negatives: NegativesConfig = Field(default_factory=FullNegativesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        from towerkit.models import MODELS

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
        if self.model.name == "sasrec" and self.model.filter_mix > 0:
            top = self.data.max_len // 2 + 1
            if self.model.filter_frequencies > top:
                raise ValueError(
                    f"model.filter_frequencies {self.model.filter_frequencies} is more than a "
                    f"sequence of data.max_len {self.data.max_len} has: at most {top}"
                )
        return self

    def to_yaml(self) -> str:
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
            raise ConfigError("; ".join(_explain_lines(err))) from None


# --------------------------------------------------------------------------------------------
# errors that name the key
# --------------------------------------------------------------------------------------------


def _union_of(model: type[BaseModel], key: str) -> tuple[str, dict[str, type[_Section]]] | None:
    """The (tag key, members by tag) of field ``key`` of ``model`` if it is a tagged union."""
    field = model.model_fields.get(key)
    members = typing.get_args(getattr(field, "annotation", None))
    classes = tuple(typing.get_args(m)[0] if typing.get_args(m) else m for m in members)
    return _UNIONS.get(classes)


def _walk(loc: tuple) -> tuple[list[str], type[BaseModel] | None, str | None]:
    """Follow an error location through the config's sections.

    Returns the path as the user wrote it (union tags dropped), the section class holding its
    last key, and the tag of that section when it is a member of a tagged union.
    """
    model: type[BaseModel] | None = Config
    path: list[str] = []
    parent, tag = Config, None
    items = list(loc)
    while items:
        key = str(items.pop(0))
        path.append(key)
        parent = model
        if model is None or key not in model.model_fields:
            model = None
            continue
        union = _union_of(model, key)
        if union is not None and items and str(items[0]) in union[1]:
            tag = str(items.pop(0))
            model = union[1][tag]
            continue
        annotation = model.model_fields[key].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model, tag = (annotation, None) if is_section else (None, tag)
    return path, parent, tag


def _explain(error: ValidationError, source: str) -> str:
    return f"{source}: invalid configuration:\n  " + "\n  ".join(_explain_lines(error))


def _explain_lines(error: ValidationError) -> list[str]:
    """One line per error, naming the key as the user wrote it."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path, parent, tag = _walk(loc)
        where = ".".join(path) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(parent.model_fields) if parent is not None else ""
            whose = f" for {tag}" if tag else ""
            lines.append(f"{where}: unknown key{whose}; allowed here: {allowed}")
        elif item["type"] == "union_tag_invalid":
            key, members = _union_of(parent, path[-1]) if parent else ("", {})
            lines.append(
                f"{where}.{key}: unknown {path[-1]} {key} {item['ctx']['tag']!r}; use one of: "
                f"{', '.join(members)}"
            )
        elif item["type"] == "union_tag_not_found":
            lines.append(f"{where}: expected a section (a mapping), got {item.get('input')!r}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            if not path:  # a cross-field check: its message names the keys
                lines.append(message)
                continue
            shown = item.get("input")
            got = f" (got {shown!r})" if not isinstance(shown, dict) else ""
            lines.append(f"{where}: {message}{got}")
    return lines


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


def config_from_dict(
    tree: dict, overrides: list[str] = (), source: str = "config", *, machine: bool = True
) -> Config:
    """Validate a config tree (with ``KEY=VALUE`` overrides applied).

    Args:
        machine: check the machine's settings against this machine (a device it lacks is an
            error). False for a saved run's config: it describes an experiment, wherever it was
            trained.
    """
    tree = copy.deepcopy(dict(tree or {}))  # overrides never leak into the caller's dict
    for key, value in parse_overrides(list(overrides)):
        _set_path(tree, key, value)
    try:
        return Config.model_validate(tree, context={"machine": machine})
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None


def read_config_tree(path: str | Path) -> dict:
    """A YAML config file as a mapping, its relative data paths taken relative to its folder.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML, or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text; save the config as UTF-8"
        ) from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of sections, not {type(tree).__name__}"
        )
    return resolve_paths(tree or {}, path.parent)


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides, validate.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML, an unknown key (the message lists
            the allowed ones), a value of the wrong type or a failed cross-field check.
    """
    path = Path(path)
    return config_from_dict(read_config_tree(path), overrides, source=str(path))


def resolve_paths(tree: dict, base: Path) -> dict:
    """The config's data paths, where relative, taken relative to the config's folder (paths
    given with --set stay relative to the working directory)."""
    data = tree.get("data")
    if not isinstance(data, dict):
        return tree
    data = dict(data)
    if isinstance(data.get("path"), str) and not Path(data["path"]).expanduser().is_absolute():
        data["path"] = os.path.normpath(base / data["path"])
    for side in ("users", "items"):
        table = data.get(side)
        relative = isinstance(table, dict) and isinstance(table.get("path"), str)
        if relative and not Path(table["path"]).expanduser().is_absolute():
            data[side] = {**table, "path": os.path.normpath(base / table["path"])}
    return {**tree, "data": data}
