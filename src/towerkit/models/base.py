"""The contract every model follows."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from towerkit.data.batches import Batch


class MatchingModel(nn.Module, ABC):
    """A two-sided model: users and items become vectors in one ``D``-dimensional space.

    Subclasses implement exactly two methods and nothing about losses, sampling or search:

    - ``encode_users(batch) -> [B, D]``: query vectors from ``batch.users`` and
      ``batch.history`` (``[B, L]`` left-padded item ids, most recent last);
    - ``encode_items(item_ids) -> [N, D]``: item vectors from ids, with any item side
      features looked up from buffers the model owns, so the whole catalogue is
      ``encode_items(torch.arange(1, n_items + 1))``.

    A *sequential* model (``sequential = True``: SASRec, GRU4Rec) also implements
    ``encode_positions(batch) -> [W, L, D]``: the query at every position of a
    :class:`~towerkit.data.batches.SequenceBatch` window, so that one forward pass trains every
    position; ``encode_users`` is then the query at the most recent position.
    """

    embedding_dim: int
    sequential: bool = False

    @abstractmethod
    def encode_users(self, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor: ...
