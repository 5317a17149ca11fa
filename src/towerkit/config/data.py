"""The ``data`` section: a known data set or a log of one's own, its side tables, filters and
split."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from towerkit.sections import MAX_LENGTH, MAX_SEED, Section, tagged, unbounded
from towerkit.types import FeatureKind, Format, Ties, TimeUnit


class LeaveOneOutSplit(Section):
    """DESIGN.md's protocol: per user, the last interaction tests, the one before validates.

    ``ties: hstu`` orders interactions with equal times as HSTU's preprocessing does (an
    unstable sort of the whole log by time, then grouped by user), to compare with numbers
    published under it; ``stable`` (the default) keeps their file order."""

    kind: Literal["leave_one_out"] = "leave_one_out"
    ties: Ties = Field(
        default="stable",
        description="order of equal times: stable (file order) or hstu (HSTU's preprocessing)",
    )


class TemporalSplit(Section):
    """A global time cut: interactions at ``t >= test_start`` test, ``valid_start <= t <
    test_start`` validate, earlier ones train. Times are epoch seconds or ISO dates.

    With ``train_start``, only interactions from then on are training targets; the earlier ones
    are history (the input of every later target, never a target themselves): a warm start
    trains on what is new since its parent, plus a ``replay`` share of users whose older
    interactions train too."""

    kind: Literal["temporal"] = "temporal"
    test_start: int = Field(json_schema_extra=unbounded("a time"))
    valid_start: int | None = Field(
        default=None, description="null: no validation stage", json_schema_extra=unbounded("a time")
    )
    train_start: int | None = Field(
        default=None,
        description="interactions before it are history only, never training targets "
        "(null: all train)",
        json_schema_extra=unbounded("a time"),
    )
    replay: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="with train_start: the share of users (seeded) whose older interactions "
        "train too",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seeds the replay sample")

    @field_validator("test_start", "valid_start", "train_start", mode="before")
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
        first = self.valid_start if self.valid_start is not None else self.test_start
        if self.train_start is not None and self.train_start > first:
            raise ValueError(
                f"train_start ({self.train_start}) must not come after the stage that follows "
                f"training ({first})"
            )
        if self.replay and self.train_start is None:
            raise ValueError("replay is a share of the history before train_start: set it too")
        return self


class LastFractionSplit(Section):
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


class HeldOutUsersSplit(Section):
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
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seeds the division of users")

    @model_validator(mode="after")
    def _sum(self) -> HeldOutUsersSplit:
        if self.valid + self.test >= 1:
            raise ValueError(f"valid + test = {self.valid + self.test:g} leaves no user to train")
        return self


SplitConfig = tagged(
    "kind", "leave_one_out", LeaveOneOutSplit, TemporalSplit, LastFractionSplit, HeldOutUsersSplit
)


class ColumnsConfig(Section):
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


def _location(value: Any) -> Any:
    """A URL (``s3://…``, any fsspec filesystem) stays the string it is; a local path becomes
    absolute (``~`` expanded)."""
    from towerkit.storage import is_url, location

    if isinstance(value, str | Path) and not is_url(value):
        return Path(location(value)).expanduser().absolute()
    return value


def _partition_value(value: Any) -> Any:
    """A partition value as the text its folder name holds (YAML reads 2026-12-01 as a date,
    9 as a number)."""
    if isinstance(value, dt.date | int | float) and not isinstance(value, bool):
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    return value


class PartitionRange(Section):
    """The partition values from ``min`` to ``max``, both included (either may be left out);
    numbers compare as numbers, anything else as text (ISO dates sort as text)."""

    min: str | None = None
    max: str | None = None

    @field_validator("min", "max", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _partition_value(value)


class FeatureConfig(Section):
    """How a side-table column is encoded."""

    kind: FeatureKind = "categorical"
    sep: str = Field(default="|", description="multi: the separator between values in text")


class SideTableConfig(Section):
    """A user or item side table of a log given by path."""

    path: Path | str = Field(description="a local file, or a URL (s3://bucket/key)")
    key: str = Field(description="the column of the user or item id")
    format: Format | None = None
    sep: str | None = None
    features: dict[str, FeatureKind | FeatureConfig] = Field(
        default_factory=dict,
        description="column -> categorical | numeric | multi (or {kind: multi, sep: ','})",
    )
    title: str | None = Field(default=None, description="items: the column to show by ids")

    @field_validator("path", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return _location(value)

    def feature_configs(self) -> dict[str, FeatureConfig]:
        """Each feature's config, a bare kind (``genres: multi``) spelled out as a
        :class:`FeatureConfig`."""
        return {
            name: spec if isinstance(spec, FeatureConfig) else FeatureConfig(kind=spec)
            for name, spec in self.features.items()
        }


_PATH_ONLY = ("format", "sep", "columns", "users", "items", "partitions")


class DataConfig(Section):
    """Which data (a known data set, or a log of one's own), which side features, which
    filters, which split."""

    dataset: str | None = Field(
        default=None, description="a known data set (towerkit data list); default ml-1m"
    )
    path: Path | str | None = Field(
        default=None,
        description="a log file or a directory of Parquet shards, instead; local, or a URL "
        "(s3://bucket/events/, any fsspec filesystem)",
    )
    partitions: dict[str, list[str] | PartitionRange] | None = Field(
        default=None,
        description="the Hive partitions (dt=.../ folders) to read, by column: a list of values "
        "or {min, max}; the others are never read (nor downloaded)",
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
    min_user_interactions: int = Field(
        default=0, ge=0, json_schema_extra=unbounded("a filter: one that keeps nothing says so")
    )
    min_item_interactions: int = Field(
        default=0, ge=0, json_schema_extra=unbounded("a filter: one that keeps nothing says so")
    )
    min_rating: float | None = Field(
        default=None, json_schema_extra=unbounded("a rating, on the log's own scale")
    )
    max_len: int = Field(
        default=50,
        ge=1,
        le=MAX_LENGTH,
        description="history length fed to the user tower (its memory is estimated against "
        "the data before training: batch x max_len x embedding_dim)",
    )
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

    @field_validator("path", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return _location(value)

    @field_validator("partitions", mode="before")
    @classmethod
    def _partition_values(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            key: [_partition_value(v) for v in wanted] if isinstance(wanted, list) else wanted
            for key, wanted in value.items()
        }

    def partition_spec(self) -> dict[str, dict[str, Any]] | None:
        """``partitions`` as :func:`towerkit.data.partitions.partition_filter` takes it."""
        if not self.partitions:
            return None
        return {
            key: {"in": list(wanted)} if isinstance(wanted, list) else wanted.model_dump()
            for key, wanted in self.partitions.items()
        }

    @property
    def has_time(self) -> bool:
        """Whether the log has times (a known data set's say so; an own log's timestamp
        column, unless it is a sequence file)."""
        if self.dataset is not None:
            return _known_has_time(self.dataset)
        return self.columns.timestamp is not None and self.format != "sequences"

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
        else:
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
        if self.split.kind == "temporal" and not self.has_time:
            raise ValueError(
                "a temporal split needs timestamps, and this log has none (its order is the "
                "file's); use leave_one_out or last_fraction"
            )
        return self


def _known_has_time(name: str) -> bool:
    from towerkit.datasets import DATASETS

    return DATASETS[name].has_time
