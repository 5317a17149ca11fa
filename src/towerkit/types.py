"""The neutral contract types that models and the data layer both use.

Models read batches and feature tables; the data layer builds them. Both import these types
from here, so no model ever imports the data layer (and the data layer never imports a model).

- :class:`Batch`: independent samples (a user, the history before one position, its target);
- :class:`SequenceBatch`: windows of consecutive positions, one forward pass per window;
- :class:`FeatureTable`: side features of users or items, indexed by encoded id;
- :class:`PositionEncoder`: what a model implements to train on windows of positions.

Both batch kinds turn themselves into training pairs, ``(query vectors [Q, D], positive ids
[Q], layout)``, through :meth:`Batch.training_pairs`, so the trainer never asks which kind of
batch or model it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

FeatureKind = Literal["categorical", "multi", "numeric"]
#: the formats of a log file (``data.format``); the readers define how each is read
Format = Literal["csv", "tsv", "parquet", "jsonl", "sequences"]
#: the order of interactions with equal times: ``stable`` keeps their file order; ``hstu``
#: reproduces HSTU's preprocessing (``pandas.DataFrame.sort_values`` by time over the whole log,
#: an unstable quicksort, then grouped by user)
Ties = Literal["stable", "hstu"]
#: the unit of numeric timestamps (``data.columns.timestamp_unit``)
TimeUnit = Literal["s", "ms", "us", "ns"]
#: the catalogue distributions sampled negatives are drawn from (``negatives.sampler``)
SamplerKind = Literal["uniform", "popularity", "log_popularity"]


class SeenPolicy(str, Enum):
    """Which items a training query has already seen, and so are not its negatives (the
    evaluation masks them from every ranking): chosen once, from ``negatives.exclude_seen``,
    and given to the batches (which carry what it needs) and to the task (which masks).

    - ``NONE``: seen items may be negatives (``exclude_seen: false``);
    - ``WINDOW``: the items of the query's window of positions (per-sample batches: its
      history of ``max_len``) (``exclude_seen: window``);
    - ``HISTORY``: everything its user saw before it (``exclude_seen: true``): windows also
      carry the items before them.
    """

    NONE = "none"
    WINDOW = "window"
    HISTORY = "history"

    @classmethod
    def parse(cls, value: bool | str | SeenPolicy) -> SeenPolicy:
        """``negatives.exclude_seen``'s value (false, true, window) as a policy."""
        if isinstance(value, bool):
            return cls.HISTORY if value else cls.NONE
        return cls(value)

    @property
    def excludes(self) -> bool:
        """Whether seen items are left out of a query's negatives."""
        return self is not SeenPolicy.NONE


class Vocabulary(Protocol):
    """Raw ids <-> ids ``1..n`` (0 = padding): what :class:`~towerkit.data.vocab.Vocab` is, as
    the contract types and the towers see it."""

    name: str

    @property
    def size(self) -> int:
        """Rows an embedding table needs: ``n + 1`` (row 0 is padding)."""

    @property
    def raw(self) -> np.ndarray:
        """The raw ids in id order: ``raw[i]`` has id ``i + 1``."""

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Ids of raw values (raises :class:`UnknownError` naming one it does not know)."""

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Raw values of ids ``1..n``."""


@dataclass(frozen=True)
class FeatureTable:
    """Side features of one entity type, indexed by encoded id (row 0 is padding).

    Attributes:
        values: feature name -> array. Categorical: int64 ``[n + 1]`` codes (0 = missing).
            Multi-valued: int64 ``[n + 1, L]``, codes left-aligned and padded with 0.
            Numeric: float32 ``[n + 1]`` (0 where missing).
        kinds: feature name -> ``"categorical"``, ``"multi"`` or ``"numeric"``.
        vocabs: feature name -> Vocab of its values (categorical and multi-valued features).
    """

    values: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, FeatureKind] = field(default_factory=dict)
    vocabs: dict[str, Vocabulary] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def cardinality(self, name: str) -> int:
        """Embedding rows a categorical or multi-valued feature needs (its vocab size + 1)."""
        return self.vocabs[name].size


@dataclass(frozen=True)
class Seen:
    """The items queries have already seen (0 = none): a training task that excludes seen
    items from the negatives reads them.

    Attributes:
        items: int64 ``[Q, S]`` per query.
        before: int64 ``[W, P]`` per window of positions, items seen before the window began,
            shared by the window's queries (None: nothing before the windows).
        window: int64 ``[Q]`` the window of each query (with ``before``).
    """

    items: torch.Tensor
    before: torch.Tensor | None = None
    window: torch.Tensor | None = None


class TrainingPairs(NamedTuple):
    """What a batch trains: query vectors and the item each must retrieve.

    Attributes:
        queries: ``[Q, D]`` query vectors.
        positives: int64 ``[Q]`` positive item ids.
        layout: for windows, the boolean ``[W, T]`` mask of the positions the queries come from
            (row-major order), so that negatives can be shared per window; None for
            independent samples.
        weights: ``[Q]`` weights of the pairs' losses (the interactions' weights), or None.
        seen: the items each query has already seen, when asked for (:class:`Seen`).
    """

    queries: torch.Tensor
    positives: torch.Tensor
    layout: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    seen: Seen | None = None


class UserEncoder(Protocol):
    #: None: ``encode_users`` gives ``[B, D]``; K: ``[B, K, D]`` (see ``MatchingModel``)
    """What a query tower does: a batch to user vectors."""

    n_interests: int | None

    def encode_users(self, batch: Batch) -> torch.Tensor:
        """User vectors of a batch: ``[B, D]``, or ``[B, K, D]`` for K interests."""


class PositionEncoder(Protocol):
    """What a model that trains on every position does: one query vector per position."""

    def encode_positions(self, batch: SequenceBatch) -> torch.Tensor:
        """Query vectors at the positions that count, ``[Q, D]`` (row-major over the layout)."""


def _to(tensor: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


@dataclass(frozen=True)
class Batch:
    """Independent samples.

    Attributes:
        users: int64 ``[B]`` encoded user ids (0 for a user the model never saw).
        history: int64 ``[B, L]`` previous items, left-padded with 0, most recent last.
        targets: int64 ``[B]`` the item at the sample's position.
        user_features: optional encoded side-feature values per row (feature name -> ``[B]``
            codes or numbers, ``[B, W]`` codes for multi-valued features), used instead of the
            values the model looks up by user id: how a user the model never saw is described.
        weights: float ``[B]`` weights of the targets' interactions, or None.
        seen: what the samples' training pairs say they have seen (:class:`SeenPolicy`; any
            policy but ``NONE``: their history).
        times: int64 ``[B, L]`` epoch seconds of the history's items (0 under padding), for a
            model that reads them (``reads_times``), else None.
        at: int64 ``[B]`` epoch seconds at which each query is made (the time of the target
            it predicts; at serving, now), with ``times``.
    """

    users: torch.Tensor
    history: torch.Tensor
    targets: torch.Tensor
    user_features: Mapping[str, torch.Tensor] | None = None
    weights: torch.Tensor | None = None
    seen: SeenPolicy = SeenPolicy.NONE
    times: torch.Tensor | None = None
    at: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.users)

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``."""
        features = None
        if self.user_features is not None:
            features = {name: value.to(device) for name, value in self.user_features.items()}
        return Batch(
            self.users.to(device),
            self.history.to(device),
            self.targets.to(device),
            features,
            _to(self.weights, device),
            self.seen,
            _to(self.times, device),
            _to(self.at, device),
        )

    def training_pairs(self, model: UserEncoder, seen: bool | None = None) -> TrainingPairs:
        """One query per sample: ``encode_users`` and the targets. A multi-interest model's
        ``[B, K, D]`` users become the interest that matches each target best (label-aware,
        ``model.select_interest``). ``seen`` (default: the batch's :class:`SeenPolicy`): also
        return each sample's history as the items it has seen."""
        seen = self.seen.excludes if seen is None else seen
        queries = model.encode_users(self)
        if model.n_interests is not None:  # (B, K, D) -> (B, D)
            queries = model.select_interest(queries, self.targets)
        return TrainingPairs(
            queries, self.targets, None, self.weights, Seen(self.history) if seen else None
        )


@dataclass(frozen=True)
class SequenceBatch:
    """Training windows: one forward pass per window, one query per real position.

    Attributes:
        users: int64 ``[W]`` encoded user of each window.
        history: int64 ``[W, L]`` the window's input items, left-padded with 0, most recent last.
        targets: int64 ``[W, L]`` the item that follows each input (0 under padding): the query
            at column ``j`` has seen ``history[:, : j + 1]`` and must predict ``targets[:, j]``.
        weights: float ``[W, L]`` weights of the targets' interactions (0 under padding), or
            None.
        before: int64 ``[W, P]`` the user's items before the window's inputs (left-padded
            with 0), under the ``HISTORY`` seen policy, or None.
        seen: what the positions' training pairs say they have seen (:class:`SeenPolicy`).
        times: int64 ``[W, L]`` epoch seconds of the inputs (0 under padding), for a model that
            reads them (``reads_times``), else None.
        at: int64 ``[W, L]`` epoch seconds at which each position's query is made: the time of
            its target (0 under padding), with ``times``.
    """

    users: torch.Tensor
    history: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None = None
    before: torch.Tensor | None = None
    seen: SeenPolicy = SeenPolicy.NONE
    times: torch.Tensor | None = None
    at: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.users)

    @property
    def layout(self) -> torch.Tensor:
        """``[W, L]`` boolean: the positions that are queries (they have a target)."""
        return self.targets > 0

    @property
    def n_queries(self) -> int:
        """Positions that count (queries the batch trains)."""
        return int(self.layout.sum())

    def to(self, device: torch.device | str) -> SequenceBatch:
        """The batch on ``device``."""
        return SequenceBatch(
            self.users.to(device), self.history.to(device), self.targets.to(device),
            _to(self.weights, device), _to(self.before, device), self.seen,
            _to(self.times, device), _to(self.at, device),
        )  # fmt: skip

    def training_pairs(self, model: PositionEncoder, seen: bool | None = None) -> TrainingPairs:
        """Every real position of every window is a query: one pass, many pairs. ``seen``
        (default: the batch's :class:`SeenPolicy`): also return what each position has seen:
        the window's items up to it, and the items before the window (``before``, when the
        batch has them)."""
        seen = self.seen.excludes if seen is None else seen
        layout = self.layout  # (W, L)
        queries = model.encode_positions(self)[layout]  # (Q, D)
        weights = None if self.weights is None else self.weights[layout]
        known = None
        if seen:
            length = self.history.shape[1]
            upto = self.history.new_ones((length, length)).tril()  # (L, L): 1 where key k <= j
            items = (self.history[:, None, :] * upto[None])[layout]  # (Q, L)
            window = None
            if self.before is not None:
                rows = self.history.new_ones(layout.shape).cumsum(0) - 1  # (W, L): row index
                window = rows[layout]
            known = Seen(items, self.before, window)
        return TrainingPairs(queries, self.targets[layout], layout, weights, known)
