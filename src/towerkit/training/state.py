"""What training leaves behind after each epoch: the per-epoch log and the resumable state.

Kept apart from the trainer so that a run directory reads and writes checkpoints without
loading the training loop (:mod:`towerkit.runs` is imported by retrieval and serving).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class EpochLog:
    epoch: int
    loss: float
    seconds: float
    samples_per_second: float
    valid: dict[str, float] = field(default_factory=dict)
    eval_seconds: float = 0.0
    #: the learning rate and the temperature at the epoch's end (NaN in checkpoints written
    #: before they were logged)
    lr: float = float("nan")
    temperature: float = float("nan")


@dataclass
class TrainState:
    """Everything needed to continue training after ``epoch`` finished epochs.

    :meth:`to_dict` holds tensors and plain Python values only, so it loads with
    ``torch.load(..., weights_only=True)``.
    """

    epoch: int
    model: dict[str, torch.Tensor]
    task: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    logs: list[EpochLog]
    best_score: float
    best_epoch: int
    best_valid: dict[str, float]
    best_weights: dict[str, dict[str, torch.Tensor]] | None
    stale: int
    stopped: bool
    rng: dict[str, Any]
    #: the towers' precision the run chose (``train.precision: auto`` keeps it on resume)
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """The state as plain values, for a checkpoint."""
        out = {key: getattr(self, key) for key in self.__dataclass_fields__}
        out["logs"] = [asdict(log) for log in self.logs]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state a checkpoint stored (:meth:`to_dict`)."""
        data = dict(data)
        data["logs"] = [EpochLog(**log) for log in data["logs"]]
        return cls(**data)


def epochs_of(logs: Iterable[EpochLog]) -> list[dict[str, Any]]:
    """Per-epoch loss, learning rate, temperature and validation metrics (what
    ``metrics.json`` keeps of each epoch)."""
    keys = ("epoch", "loss", "lr", "temperature", "valid")
    return [{key: getattr(log, key) for key in keys} for log in logs]
