"""How queries and items are scored and contrasted: ``similarity``, ``temperature`` and
``negatives``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from towerkit.sections import MAX_LENGTH, Section, tagged
from towerkit.similarity import Similarity, SimilarityName, Temperature, get_similarity
from towerkit.types import SamplerKind


class SimilarityConfig(Section):
    """How user and item vectors are compared: ``cosine``, ``dot`` or ``euclidean`` (``normalize:
    true`` for L2-normalised vectors)."""

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

    def build(self) -> Similarity:
        """The similarity this section names: the one place a config becomes one."""
        return get_similarity(self.name, normalize=self.normalize)


#: logits divided by more than this are all ~0: the objective no longer tells items apart
_MAX_TEMPERATURE = 1000.0


class TemperatureConfig(Section):
    """The temperature that divides the scores before every loss: fixed at ``value``, or learned
    within ``[min_value, max_value]``."""

    value: float = Field(default=0.1, gt=0, le=_MAX_TEMPERATURE)
    learnable: bool = False
    min_value: float = Field(default=0.01, gt=0, le=_MAX_TEMPERATURE)
    max_value: float = Field(default=10.0, gt=0, le=_MAX_TEMPERATURE)

    @model_validator(mode="after")
    def _range(self) -> TemperatureConfig:
        if not self.min_value <= self.value <= self.max_value:
            raise ValueError(
                f"value {self.value} must lie in [min_value, max_value] = "
                f"[{self.min_value}, {self.max_value}]"
            )
        return self

    def build(self) -> Temperature:
        """The temperature this section describes (fixed or learnable)."""
        return Temperature(
            self.value,
            learnable=self.learnable,
            min_value=self.min_value,
            max_value=self.max_value,
        )


class _Negatives(Section):
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
    n: int = Field(
        default=256,
        ge=1,
        le=MAX_LENGTH,
        description="sampled negatives per query (their memory is estimated before training: "
        "batch x n x embedding_dim unless shared)",
    )
    sampler: SamplerKind = Field(
        default="uniform",
        description="catalogue distribution of sampled negatives; popularity suits list-wise "
        "training with log-q, uniform point- and pair-wise training",
    )
    alpha: float = Field(
        default=0.75, ge=0.0, le=10.0, description="popularity exponent (0: uniform)"
    )
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


NegativesConfig = tagged(
    "kind",
    "full",
    FullNegativesConfig,
    InBatchNegativesConfig,
    SampledNegativesConfig,
    MixedNegativesConfig,
)
