"""The contract every model follows, and the config sections models share.

A model file owns its config section (a :class:`ModelSection` with a ``name``) and builds itself
from it (:meth:`MatchingModel.from_config`); the registry in :mod:`towerkit.models` lists the
model classes, and the config's ``model`` union is built from it. Adding a model is one new
file and one registry line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

from towerkit.errors import TowerkitError
from towerkit.nn import FeatureEmbedding, PooledTowerOptions, padded_embedding
from towerkit.nn.layers import Activation, Pooling
from towerkit.sections import MAX_LENGTH, MAX_WIDTH, Section
from towerkit.types import Batch, FeatureTable, SequenceBatch


class UnseenItemError(TowerkitError):
    """An item the model never saw cannot be given a vector (the message says why)."""


@dataclass(frozen=True)
class DataShape:
    """What a model is sized by, passed whole to :meth:`MatchingModel.from_config`.

    Attributes:
        n_users, n_items: id ranges (``1..n``; 0 is padding).
        max_len: the history length read (``data.max_len``).
        user_features, item_features: encoded side features, or None (a model that uses
            none ignores them).
    """

    n_users: int
    n_items: int
    max_len: int
    user_features: FeatureTable | None = None
    item_features: FeatureTable | None = None


class ModelSection(Section):
    """A model's config section (``model:`` in a config); ``name`` (a ``Literal`` in each
    subclass) tells the models apart."""

    name: str
    embedding_dim: int = Field(default=64, ge=1, le=MAX_WIDTH)

    def check(self, max_len: int) -> None:
        """Checks against other sections (``data.max_len``): raise ``ValueError`` naming the
        keys. None by default."""

    # What :mod:`towerkit.runs.budget` needs to estimate a run's memory before building anything.
    def history_width(self) -> tuple[str, int]:
        """The key and width of the vectors a history is embedded into (``embedding_dim`` by
        default)."""
        return "embedding_dim", self.embedding_dim

    def attention(self) -> tuple[int, int] | None:
        """``(heads, layers)`` of self-attention over the history (``[B, H, L, L]`` logits per
        layer); None when the model has none."""
        return None

    def vectors_per_user(self) -> int:
        """How many vectors a user has (multi-interest models: K)."""
        return 1


class PooledHistorySection(ModelSection):
    """The keys of models with a pooled-history user tower (YouTubeDNN, DSSM)."""

    hidden: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(default_factory=lambda: [256])
    activation: Activation = "gelu"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: Pooling = "recency"
    recent_items: int = Field(
        default=0,
        ge=0,
        le=MAX_LENGTH,
        description="also feed the last k history embeddings in order",
    )
    feature_dim: int = Field(
        default=16, ge=1, le=MAX_WIDTH, description="embedding width of each feature"
    )

    def tower(self) -> PooledTowerOptions:
        """The user tower's shape these keys describe."""
        return PooledTowerOptions(
            hidden=tuple(self.hidden),
            activation=self.activation,
            dropout=self.dropout,
            pooling=self.pooling,
            recent_items=self.recent_items,
            feature_dim=self.feature_dim,
        )


class SequenceSection(ModelSection):
    """The keys of sequential models (SASRec, GRU4Rec)."""

    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    share_embeddings: bool = Field(
        default=True, description="score items with the input embedding table"
    )
    feature_dim: int = Field(
        default=16,
        ge=1,
        le=MAX_WIDTH,
        description="width of each item feature (data.item_features) added",
    )


class MatchingModel(nn.Module, ABC):
    """A two-sided model: users and items become vectors in one ``D``-dimensional space.

    Subclasses implement two methods and nothing about losses, sampling or search:

    - ``encode_users(batch) -> [B, D]``: query vectors from ``batch.users`` and
      ``batch.history`` (``[B, L]`` left-padded item ids, most recent last), and from
      ``batch.user_features`` when given instead of the stored side features;
    - ``encode_items(item_ids) -> [N, D]``: item vectors from ids, with any item side
      features looked up from buffers the model owns, so the whole catalogue is
      ``encode_items(torch.arange(1, n_items + 1))``.

    A model that can train on windows of positions (``encodes_positions = True``) also
    implements ``encode_positions(batch) -> [W, L, D]``: the query at every position of a
    :class:`~towerkit.types.SequenceBatch` window, so that one forward pass trains every position.
    A *sequential* model (``sequential = True``: SASRec, GRU4Rec) trains on windows only, and its
    ``encode_users`` is the query at the most recent position.
    """

    embedding_dim: int
    #: the shape of ``encode_users``: None, one vector per user (``[B, D]``); K, a
    #: multi-interest model's K vectors per user (``[B, K, D]``, K = 1 included). Every consumer
    #: (training pairs, evaluation, retrieval, export, serving) reads this declaration, never
    #: the rank of a tensor.
    n_interests: int | None = None
    #: implements ``encode_positions``: trains on windows of positions (``SequenceBatches``).
    encodes_positions: ClassVar[bool] = False
    #: reads the history as a sequence: windows are its training batches, without context.
    sequential: ClassVar[bool] = False
    #: the config section this model is built from (its ``name`` is the model's name).
    config_class: ClassVar[type[ModelSection]]

    @classmethod
    def model_name(cls) -> str:
        """The model's name in a config (``model.name``)."""
        return cls.config_class.model_fields["name"].default

    @classmethod
    @abstractmethod
    def from_config(cls, config: ModelSection, data: DataShape) -> MatchingModel:
        """The model ``config`` describes, sized for ``data``."""

    @abstractmethod
    def encode_users(self, batch: Batch) -> torch.Tensor:
        """User (query) vectors of a batch: ``[B, D]``, or ``[B, K, D]`` for K interests."""

    @abstractmethod
    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Item vectors of item ids: ``[N] -> [N, D]`` (any leading shape)."""

    #: the user tower reads the history's times and the query's (``Batch.times``, ``at``):
    #: HSTU's relative time bias
    reads_times: bool = False

    @property
    def reads_item_features(self) -> bool:
        """Whether the item tower reads item side features (then :meth:`encode_items_with`
        takes them, and items the model never saw get vectors from theirs)."""
        return False

    def encode_items_with(
        self, item_ids: torch.Tensor, values: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Item vectors of ``item_ids [N]`` with the given side-feature values instead of the
        stored ones (feature name -> ``[N]`` codes or numbers, ``[N, W]`` codes): what the
        exported item tower computes. ``[N, D]``. A model whose item tower reads ids only
        ignores ``values``."""
        return self.encode_items(item_ids)

    def encode_unseen_items(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Vectors of items the model never saw, from their encoded side features (feature
        name -> ``[N]`` codes or numbers, ``[N, W]`` codes of a multi-valued feature): the item
        tower on the unknown id's row (id 0) and these features. ``[N, D]``.

        Raises:
            UnseenItemError: a model whose item tower reads no item features: an item it never
                saw has no vector (the default here).
        """
        raise UnseenItemError(
            f"{self.model_name()}: its item tower reads item ids only, so an item it never saw "
            "has no vector (its id has no trained row and nothing else describes it); train "
            "with data.item_features on a model whose item tower reads them (dssm, sasrec, "
            "gru4rec) to embed new items from their features"
        )

    def _unseen_ids(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1:
            raise UnseenItemError(f"feature values of different lengths: {sorted(lengths)}")
        return torch.zeros(lengths.pop(), dtype=torch.long)

    def encode_positions(self, batch: SequenceBatch) -> torch.Tensor:
        """``[W, L, D]`` query vectors at every position of the batch's windows."""
        raise NotImplementedError(
            f"{type(self).__name__} does not train on windows of positions "
            "(its encodes_positions is False)"
        )


class SequenceModel(MatchingModel):
    """Shared parts of sequential user towers (SASRec, GRU4Rec): item tables, input dropout,
    and the three encoders, all derived from ``encode_sequence([B, L]) -> [B, L, D]``.

    Args:
        n_items: catalogue size (ids ``1..n_items``; 0 is padding).
        embedding_dim: D.
        max_len: the longest sequence read (older items are cut).
        dropout: on the input embeddings.
        share_embeddings: score items with the input embedding table.
        item_features: encoded item side features, or None. When given, an item's vector (as
            input and as candidate) is its id embedding plus a linear map of its feature
            embeddings, so items seen rarely borrow from items that share their features.
        feature_dim: embedding width of each item feature.
    """

    encodes_positions = True
    sequential = True

    def __init__(
        self,
        n_items: int,
        embedding_dim: int,
        max_len: int,
        dropout: float,
        share_embeddings: bool,
        item_features: FeatureTable | None = None,
        feature_dim: int = SequenceSection.default("feature_dim"),
    ) -> None:
        super().__init__()
        self.embedding_dim, self.max_len = embedding_dim, max_len
        self.item_embedding = padded_embedding(n_items + 1, embedding_dim)
        self.output_embedding = (
            self.item_embedding
            if share_embeddings
            else padded_embedding(n_items + 1, embedding_dim)
        )
        self.input_dropout = nn.Dropout(dropout)
        self.item_side: FeatureEmbedding | None = None
        if item_features is not None and len(item_features):
            self.item_side = FeatureEmbedding(item_features, feature_dim)
            # No bias: the padding item (no features) keeps a zero vector.
            self.side_projection = nn.Linear(self.item_side.out_dim, embedding_dim, bias=False)

    @property
    def reads_item_features(self) -> bool:
        return self.item_side is not None

    def encode_items_with(
        self, item_ids: torch.Tensor, values: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        if self.item_side is None:
            return self.encode_items(item_ids)
        side = self.side_projection(self.item_side(item_ids, values))
        return self.output_embedding(item_ids) + side

    def encode_unseen_items(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The output table's unknown-id row (id 0: zeros) plus the side features' projection."""
        if self.item_side is None:
            return super().encode_unseen_items(values)
        return self.encode_items_with(self._unseen_ids(values), values)

    def embed_items(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        """``ids [...]`` -> ``[..., D]``: the id embedding, plus the side features' when the
        model has them."""
        vectors = table(ids)
        if self.item_side is None:
            return vectors
        side = self.side_projection(self.item_side(ids.reshape(-1)))  # (N, D)
        return vectors + side.view(vectors.shape)

    @abstractmethod
    def encode_sequence(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded item ids -> ``[B, L, D]``: position ``j`` has seen items up
        to ``j`` only."""

    def encode_last(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``[B, D]``: the most recent position of :meth:`encode_sequence`. A
        model that can skip the other positions' last layer overrides it (SASRec)."""
        return self.encode_sequence(history)[:, -1]

    def encode_positions(self, batch: SequenceBatch) -> torch.Tensor:
        return self.encode_sequence(batch.history)

    def encode_users(self, batch: Batch) -> torch.Tensor:
        return self.encode_last(batch.history)  # (B, D): the most recent position

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_items(self.output_embedding, item_ids)
