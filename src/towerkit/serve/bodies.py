"""The JSON bodies of the server's requests and responses (their schemas are the OpenAPI
document at ``/docs``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

# Strict: JSON's true and false are not the numbers 1 and 0 (lax parsing would take
# {"user": true} as user 1), nor is 1.0 an id.
RawId = StrictStr | StrictInt
#: epoch seconds, within +-31,000 years (gaps stay far inside int64)
Seconds = Annotated[StrictInt, Field(ge=-(10**12), le=10**12)]
FeatureValue = str | int | float | list[str | int]
MAX_BATCH_QUERIES = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Body):
    """A known user, or a history of items (with optional side features) for anyone else."""

    user: RawId | None = Field(default=None, description="a known user's raw id")
    history: list[RawId] | None = Field(
        default=None, description="raw item ids, oldest first (the last max_len are read)"
    )
    features: dict[str, FeatureValue | None] | None = Field(
        default=None, description="raw user side features of a history request"
    )
    times: list[Seconds] | None = Field(
        default=None,
        description="epoch seconds of the history's items, one per item, for a model that "
        "reads times (HSTU with model.time_bias)",
    )
    at: Seconds | None = Field(
        default=None,
        description="epoch seconds at which the query is made, for a model that reads times "
        "(default: a history's last time; a known user's last time in the log)",
    )
    k: StrictInt = Field(default=10, description="how many items: 1 to min(1000, catalogue)")
    exclude: list[RawId] = Field(default_factory=list, description="raw item ids to leave out")
    filter: str | None = Field(
        default=None,
        max_length=4000,
        description='only items whose attributes pass, in Milvus\'s syntax: label == "Comedy" '
        "and count >= 100 (the attributes are the export's items.parquet columns)",
    )
    filter_seen: bool = Field(
        default=True,
        validation_alias=AliasChoices("filter_seen", "exclude_seen"),
        description="leave the user's (or the history's) own items out of the results "
        "(exclude_seen, its earlier name, is still read)",
    )

    @model_validator(mode="after")
    def _one_query(self) -> RecommendRequest:
        if (self.user is None) == (self.history is None):
            raise ValueError("give either user or history")
        if self.features is not None and self.history is None:
            raise ValueError("features describe the user of a history request")
        if self.times is not None and (self.history is None or len(self.times) != len(
                self.history)):  # fmt: skip
            raise ValueError("times go with a history: one time per item")
        return self


class Item(BaseModel):
    """One recommended item: its raw id, title (None without one) and score."""

    id: RawId
    title: str | None
    score: float


class RecommendResponse(BaseModel):
    """The answer to ``/recommend``: the items, the model version and index that gave them."""

    items: list[Item]
    model_version: str
    index: str
    history_truncated: bool = Field(
        default=False, description="the history was longer than max_len: its last max_len read"
    )


class BatchRequest(_Body):
    """The body of ``/recommend/batch``: up to ``MAX_BATCH_QUERIES`` recommend requests."""

    queries: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)


class BatchResponse(BaseModel):
    """The answer to ``/recommend/batch``: one response per query, in order."""

    results: list[RecommendResponse]


class SimilarRequest(_Body):
    """The body of ``/similar``: an item, how many neighbours, items to leave out and a filter."""

    item: RawId
    k: StrictInt = 10
    exclude: list[RawId] = Field(default_factory=list)
    filter: str | None = Field(default=None, max_length=4000, description="as for /recommend")


class ReloadRequest(_Body):
    """The body of ``/admin/reload``: the run or export to serve next."""

    path: str | None = Field(
        default=None,
        description="a run or export directory on the server's machine, or a URL "
        "(s3://bucket/exports/a); default: the one served now (a URL: what is published "
        "there now)",
    )


#: items one ``/admin/items`` request may add or change
MAX_UPSERT_ITEMS = 10_000


class ItemUpsert(_Body):
    """A new or changed item: its vector, or its side features for the exported item tower."""

    id: RawId = Field(description="the item's raw id (new, or one the catalogue holds)")
    vector: list[float] | None = Field(default=None, description="its vector, of the index's dim")
    features: dict[str, FeatureValue | None] | None = Field(
        default=None,
        description="its raw side features, as the training item table spelled them (models "
        "whose item tower reads them)",
    )
    title: str | None = Field(default=None, description="its title (a new item's, or a new one)")
    attributes: dict[str, StrictStr | StrictInt | float | bool | None] = Field(
        default_factory=dict, description="values of the attributes filters read"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ItemUpsert:
        if (self.vector is None) == (self.features is None):
            raise ValueError("give either vector or features")
        return self


class ItemsRequest(_Body):
    """The body of ``/admin/items``: up to ``MAX_UPSERT_ITEMS`` items to add or change."""

    items: list[ItemUpsert] = Field(min_length=1, max_length=MAX_UPSERT_ITEMS)


class ItemsResponse(BaseModel):
    """The answer to ``/admin/items``: what changed, and how the index took it."""

    added: int
    updated: int
    items: int = Field(description="items in the catalogue now")
    index: str
    rebuilt: bool = Field(description="the index was built anew (Annoy), not added to")
