"""Splits: which part of each user's sequence trains, validates and tests.

A :class:`Split` cuts every user's time-ordered sequence into three consecutive parts::

    offsets[u] ........ train_end[u] ........ valid_end[u] ........ offsets[u + 1]
    |---- training ------|---- validation ----|------- test --------|

Every split kind shares this form. Leave-one-out puts the last interaction in test and the one
before it in validation; the temporal split cuts at global timestamps. The history of a target
is everything before its part starts: training for validation, training + validation for test.

A split may also hold users out (ComiRec's protocol, :func:`held_out_users`): a held-out user's
"training" part is only the input of their targets and never trains the model
(:attr:`Split.fit_end`). It may also start training later than each sequence does
(:attr:`Split.fit_start`: a warm start trains on what is new; what came before is history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from towerkit.data.sequences import Sequences

Stage = Literal["valid", "test"]


@dataclass(frozen=True)
class Targets:
    """Flat evaluation targets of one stage.

    Attributes:
        users: int64 ``[T]`` encoded user of each target.
        items: int64 ``[T]`` target item.
        history_end: int64 ``[T]`` absolute position (in the split's flat arrays) where the
            user's history ends: the history is ``items[offsets[user]:history_end]``.
    """

    users: np.ndarray
    items: np.ndarray
    history_end: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Split:
    """A three-way cut of every user's sequence (see the module docstring).

    Attributes:
        sequences: the full time-ordered sequences.
        train_end: int64 ``[n_users + 1]`` absolute position where training ends.
        valid_end: int64 ``[n_users + 1]`` absolute position where validation ends.
        held_out: boolean ``[n_users]``: users whose training part is evaluation input only,
            never trained on (None: no user is held out).
        fit_start: int64 ``[n_users + 1]`` absolute position where training targets begin:
            the items before it are history only (None: the user's start).
    """

    sequences: Sequences
    train_end: np.ndarray
    valid_end: np.ndarray
    held_out: np.ndarray | None = None
    fit_start: np.ndarray | None = None

    def __post_init__(self) -> None:
        starts, ends = self.sequences.offsets[:-1], self.sequences.offsets[1:]
        ok = (
            (starts <= self.train_end)
            & (self.train_end <= self.valid_end)
            & (self.valid_end <= ends)
        )
        if not ok.all():
            raise ValueError("split boundaries must satisfy start <= train_end <= valid_end <= end")
        if self.held_out is not None and self.held_out.shape != starts.shape:
            raise ValueError(f"held_out must hold one flag per user ({len(starts)})")
        if (
            self.fit_start is not None
            and not ((starts <= self.fit_start) & (self.fit_start <= ends)).all()
        ):
            raise ValueError("fit_start must lie within each user's sequence")

    @property
    def fit_end(self) -> np.ndarray:
        """int64 ``[n_users]`` absolute position where the part the model trains on ends:
        ``train_end``, or the user's start for a held-out user."""
        if self.held_out is None:
            return self.train_end
        return np.where(self.held_out, self.sequences.offsets[:-1], self.train_end)

    @property
    def first_target(self) -> np.ndarray:
        """int64 ``[n_users]`` absolute position of each user's first training target: one
        past the user's start (the first item has no history), or :attr:`fit_start`."""
        first = self.sequences.offsets[:-1] + 1
        return first if self.fit_start is None else np.maximum(first, self.fit_start)

    @property
    def n_users(self) -> int:
        """Users in the split (ids ``1..n_users``)."""
        return self.sequences.n_users

    def train(self) -> Sequences:
        """The part of every user's sequence the model trains on, as its own CSR (empty for
        held-out users; from :attr:`fit_start`, where the split has one)."""
        starts = self.sequences.offsets[:-1]
        if self.fit_start is not None:
            starts = np.minimum(self.fit_start, self.fit_end)
        return self.sequences.select(starts, self.fit_end)

    def targets(self, stage: Stage) -> Targets:
        """All targets of ``"valid"`` or ``"test"`` with the end of each one's history.

        For a temporal split a user can have several targets; they share one history (all that
        came before the stage began), so later targets never leak into the query.
        """
        if stage == "valid":
            start, end = self.train_end, self.valid_end
        elif stage == "test":
            start, end = self.valid_end, self.sequences.offsets[1:]
        else:
            raise ValueError(f"unknown stage {stage!r}; use 'valid' or 'test'")
        lengths = end - start
        users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        positions = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(
            start - (np.cumsum(lengths) - lengths), lengths
        )
        return Targets(
            users=users,
            items=self.sequences.items[positions],
            history_end=np.repeat(start, lengths),
        )

    def counts(self) -> dict[str, int]:
        """Interactions in each part."""
        starts, ends = self.sequences.offsets[:-1], self.sequences.offsets[1:]
        return {
            "train": int((self.train_end - starts).sum()),
            "valid": int((self.valid_end - self.train_end).sum()),
            "test": int((ends - self.valid_end).sum()),
        }


def leave_one_out(sequences: Sequences) -> Split:
    """Last interaction -> test, the one before -> validation, the rest -> training.

    A user with one interaction has only a test target; with two, a validation and a test
    target and no training history.
    """
    starts, ends = sequences.offsets[:-1], sequences.offsets[1:]
    valid_end = np.maximum(ends - 1, starts)
    train_end = np.maximum(ends - 2, starts)
    return Split(sequences, train_end=train_end, valid_end=valid_end)


def temporal_split(
    sequences: Sequences,
    test_start: int,
    valid_start: int | None = None,
    train_start: int | None = None,
    replay: float = 0.0,
    seed: int = 0,
) -> Split:
    """Global time cut: interactions at ``t >= test_start`` test, ``valid_start <= t <
    test_start`` validate, earlier ones train. Without ``valid_start`` there is no validation.

    Args:
        test_start, valid_start: epoch seconds.
        train_start: interactions before it are history only, never a training target (a warm
            start trains on what is new); None: every training interaction is a target.
        replay: with ``train_start``, the share of users (drawn with ``seed``) whose earlier
            interactions are targets too.
    """
    if valid_start is None:
        valid_start = test_start
    if valid_start > test_start:
        raise ValueError(
            f"valid_start ({valid_start}) must not come after test_start ({test_start})"
        )
    starts = sequences.offsets[:-1]
    # Per user, the number of positions before each cut; sequences are time-sorted per user.
    before = np.concatenate([[0], np.cumsum(sequences.timestamps < valid_start)])
    before_test = np.concatenate([[0], np.cumsum(sequences.timestamps < test_start)])
    offsets = sequences.offsets
    train_end = starts + before[offsets[1:]] - before[offsets[:-1]]
    valid_end = starts + before_test[offsets[1:]] - before_test[offsets[:-1]]
    fit_start = None
    if train_start is not None:
        history = np.concatenate([[0], np.cumsum(sequences.timestamps < train_start)])
        fit_start = starts + history[offsets[1:]] - history[offsets[:-1]]
        if replay > 0:
            replayed = np.random.default_rng(seed).random(len(starts)) < replay
            fit_start = np.where(replayed, starts, fit_start)
    return Split(sequences, train_end=train_end, valid_end=valid_end, fit_start=fit_start)


def last_fraction(sequences: Sequences, valid: float = 0.1, test: float = 0.1) -> Split:
    """Per user, the last ``ceil(test * n)`` interactions test, the ``ceil(valid * n)`` before
    them validate, the rest trains (a user of ``n`` interactions).

    A user with one interaction has only a test target. All of a user's targets of a stage share
    one history: everything before the stage began.
    """
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ValueError(f"need 0 <= valid, 0 < test and valid + test < 1, got {valid}, {test}")
    starts, ends = sequences.offsets[:-1], sequences.offsets[1:]
    lengths = ends - starts
    n_test = np.ceil(lengths * test).astype(np.int64)
    n_valid = np.minimum(np.ceil(lengths * valid).astype(np.int64), lengths - n_test)
    valid_end = ends - n_test
    train_end = valid_end - n_valid
    return Split(sequences, train_end=train_end, valid_end=valid_end)


def held_out_users(
    sequences: Sequences,
    valid: float = 0.1,
    test: float = 0.1,
    history: float = 0.8,
    seed: int = 0,
) -> Split:
    """ComiRec's protocol (Cen et al., KDD 2020): users are shuffled (seeded) and divided
    into training, validation and test users (``1 - valid - test : valid : test``); a training
    user's whole sequence trains; a validation or test user is never trained on, and the first
    ``floor(history * n)`` of their ``n`` interactions are the input of the rest, the targets
    (at least one of each for ``n >= 2``; a user of one interaction has only a target).
    """
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ValueError(f"need 0 <= valid, 0 < test and valid + test < 1, got {valid}, {test}")
    if not 0 < history < 1:
        raise ValueError(f"history must be between 0 and 1, got {history}")
    starts, ends = sequences.offsets[:-1], sequences.offsets[1:]
    lengths = ends - starts
    users = np.flatnonzero(lengths > 0)  # (id 0, padding, has no interaction)
    order = users[np.random.default_rng(seed).permutation(len(users))]
    n_test = round(test * len(users))
    n_valid = round(valid * len(users))
    role = np.zeros(len(starts), dtype=np.int8)  # 0 train, 1 valid, 2 test
    role[order[:n_test]] = 2
    role[order[n_test : n_test + n_valid]] = 1
    most = np.maximum(lengths - 1, 0)  # keep a target
    cut = starts + np.clip(np.floor(lengths * history).astype(np.int64), np.minimum(1, most), most)
    train_end = np.where(role == 0, ends, cut)
    valid_end = np.where(role == 1, ends, train_end)
    return Split(sequences, train_end=train_end, valid_end=valid_end, held_out=role > 0)
