"""Training batches for two-tower models, built by index arithmetic at batch time.

Every training position ``t >= 1`` of a user's training sequence is one sample: the user, the
(up to) ``max_len`` items before ``t`` as history, and item ``t`` as the target. Only the flat
sample positions are kept between batches (8 bytes per sample); each batch's ``[B, max_len]``
history is gathered from the CSR arrays when it is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from towerkit.data.history import gather_history
from towerkit.data.split import Split
from towerkit.types import Batch, SeenPolicy, SequenceBatch

__all__ = [
    "Batch",
    "SequenceBatch",
    "SequenceBatches",
    "TrainingBatches",
    "gather_history",
]


class TrainingBatches:
    """Shuffled mini-batches over every training position of a split.

    Args:
        split: the split whose training part is sampled.
        batch_size: samples per batch.
        max_len: history length (older items are cut, shorter histories left-padded).
        shuffle: reshuffle the samples every epoch.
        seed: the shuffling seed; epoch ``e`` uses ``(seed, e)``, so a run is reproducible and
            every epoch has its own order.
        drop_last: drop a final batch smaller than ``batch_size``.

    Example::

        batches = TrainingBatches(split, batch_size=1024, max_len=50, seed=0)
        for batch in batches.epoch(0):
            batch.history.shape  # (1024, 50)
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int = 1024,
        max_len: int = 50,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        seen: SeenPolicy = SeenPolicy.NONE,
        times: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.seen = seen
        self.split = split
        self.batch_size = batch_size
        self.max_len = max_len
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        # Training positions t >= 1 of each user: absolute positions in [first, fit_end), first
        # being start + 1 (or the split's fit_start: what came before is history only).
        first = split.first_target
        lengths = np.maximum(split.fit_end - first, 0)
        self.users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        self.positions = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(
            first - (np.cumsum(lengths) - lengths), lengths
        )
        self._epoch = 0

    @property
    def n_samples(self) -> int:
        """Training samples per epoch (one per target position)."""
        return len(self.positions)

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.n_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (indices into ``positions``)."""
        if not self.shuffle:
            return np.arange(self.n_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)

    def make_batch(self, samples: np.ndarray) -> Batch:
        """Gather the batch of the given sample indices."""
        seqs = self.split.sequences
        positions = self.positions[samples]
        users = self.users[samples]
        history = gather_history(seqs.items, seqs.offsets[users], positions, self.max_len)
        weights = None if seqs.weights is None else torch.from_numpy(seqs.weights[positions])
        return Batch(
            users=torch.from_numpy(users),
            history=torch.from_numpy(history),
            targets=torch.from_numpy(seqs.items[positions]),
            weights=weights,
            seen=self.seen,
        )

    def batches_of(self, epoch: int) -> list[np.ndarray]:
        """The sample indices of each batch of ``epoch``, in order."""
        order = self.order(epoch)
        stop = min(len(self) * self.batch_size, self.n_samples)
        return [order[begin : begin + self.batch_size] for begin in range(0, stop, self.batch_size)]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Yield the batches of one epoch in its own shuffled order."""
        for samples in self.batches_of(epoch):
            yield self.make_batch(samples)

    def __iter__(self) -> Iterator[Batch]:
        """Each ``iter()`` runs the next epoch: 0, 1, 2, ..."""
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self.epoch(epoch)


class SequenceBatches:
    """Shuffled batches of training windows: every training position ``t >= 1`` of every user
    is a query exactly once per epoch, as in :class:`TrainingBatches`, but a user's positions
    share one forward pass instead of one pass per prefix.

    A user's targets are cut into windows of at most ``max_len`` consecutive positions, aligned
    to the end of the training sequence (the last window is full; the first may be short).
    Inside a window, position ``j`` sees the window's inputs up to ``j``.

    ``context`` adds up to that many older items in front of each window, as inputs without a
    target: a pooled-history model with a history of ``context + 1`` items then sees, at every
    position, exactly the history a :class:`TrainingBatches` sample would have.

    Args:
        split: the split whose training part is used.
        batch_size: windows per batch.
        max_len: targets per window ``L``; batches are ``[W, context + L]``.
        context: extra leading inputs per window (0 for SASRec and GRU4Rec).
        shuffle, seed, drop_last: as for :class:`TrainingBatches`.
        bucket: group windows of similar length into batches (within random chunks of 50
            batches, the batches then shuffled) and cut each batch to its longest window, so
            little compute goes to padding.
        seen: the seen-items policy the batches carry (:class:`~towerkit.types.SeenPolicy`);
            ``HISTORY`` also gives each batch the user's items before each window's inputs
            (:attr:`SequenceBatch.before`).
        times: give each batch its inputs' and targets' times (:attr:`SequenceBatch.times`,
            :attr:`SequenceBatch.at`), for a model that reads them.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int = 128,
        max_len: int = 200,
        context: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        bucket: bool = True,
        seen: SeenPolicy = SeenPolicy.NONE,
        times: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.split, self.batch_size, self.max_len = split, batch_size, max_len
        self.context, self.bucket = context, bucket
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.seen, self.times = seen, times
        starts = split.sequences.offsets[:-1]
        fit_end, first = split.fit_end, split.first_target
        n_targets = np.maximum(fit_end - first, 0)  # positions first .. fit_end - 1
        n_windows = -(-n_targets // max_len)  # ceil
        self.users = np.repeat(np.arange(len(n_targets), dtype=np.int64), n_windows)
        # Window k (0 = the most recent) of a user ends (exclusive) at fit_end - k * max_len.
        back = np.arange(int(n_windows.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(n_windows) - n_windows, n_windows
        )
        self.ends = fit_end[self.users] - back * max_len
        self.begins = np.maximum(self.ends - max_len, first[self.users])
        # A split whose training starts later than its sequences (fit_start): every window's
        # inputs reach back max_len items, into the history before it, as a query's do.
        self.fill = split.fit_start is not None
        self.starts = starts[self.users]
        self.n_samples = int(n_targets.sum())
        self._epoch = 0

    @property
    def n_windows(self) -> int:
        """Training windows per epoch."""
        return len(self.users)

    def __len__(self) -> int:
        full, rest = divmod(self.n_windows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def batches_of(self, epoch: int) -> list[np.ndarray]:
        """The window indices of each batch of ``epoch``, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n_windows) if self.shuffle else np.arange(self.n_windows)
        if self.shuffle and self.bucket:
            lengths = (self.ends - self.begins)[order]
            chunk = 50 * self.batch_size
            for begin in range(0, len(order), chunk):
                part = slice(begin, begin + chunk)
                order[part] = order[part][np.argsort(lengths[part], kind="stable")]
        stop = min(len(self) * self.batch_size, self.n_windows)
        batches = [order[b : b + self.batch_size] for b in range(0, stop, self.batch_size)]
        if self.shuffle and self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def make_batch(self, windows: np.ndarray) -> SequenceBatch:
        """The batch of the given windows (indices into this epoch's windows): inputs, targets and
        the positions that count."""
        items = self.split.sequences.items
        begins, ends = self.begins[windows], self.ends[windows]
        longest = int((ends - begins).max()) if self.bucket else self.max_len
        context = max(self.context, self.max_len - longest) if self.fill else self.context
        width = context + longest
        first_input = np.maximum(begins - 1 - context, self.starts[windows])
        targets = gather_history(items, begins, ends, width)
        weights = self.split.sequences.weights
        if weights is not None:
            weights = torch.from_numpy(gather_history(weights, begins, ends, width))
        before = None
        if self.seen is SeenPolicy.HISTORY:
            starts = self.starts[windows]
            longest_before = max(int((first_input - starts).max()), 1)
            before = torch.from_numpy(gather_history(items, starts, first_input, longest_before))
        times = at = None
        if self.times:
            stamps = self.split.sequences.timestamps
            times = torch.from_numpy(gather_history(stamps, first_input, ends - 1, width))
            at = torch.from_numpy(gather_history(stamps, begins, ends, width))
        return SequenceBatch(
            users=torch.from_numpy(self.users[windows]),
            history=torch.from_numpy(gather_history(items, first_input, ends - 1, width)),
            targets=torch.from_numpy(targets),
            weights=weights,
            before=before,
            seen=self.seen,
            times=times,
            at=at,
        )

    def epoch(self, epoch: int) -> Iterator[SequenceBatch]:
        """The batches of epoch ``epoch``, in the seeded order of that epoch."""
        for windows in self.batches_of(epoch):
            yield self.make_batch(windows)

    def __iter__(self) -> Iterator[SequenceBatch]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self.epoch(epoch)
