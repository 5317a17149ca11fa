"""Training: one loop for every model, mode and negative strategy.

- :mod:`~towerkit.training.trainer`: :class:`Trainer` (epochs, early stopping, checkpoints);
- :mod:`~towerkit.training.contrastive`: the contrastive term sequential towers may add;
- :mod:`~towerkit.training.state`: what an epoch leaves behind (read by run directories
  without loading the loop).
"""

from towerkit import _lazy

__all__ = [
    "EpochLog",
    "Optimizer",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingError",
    "Validator",
]

__getattr__, __dir__ = _lazy(
    __name__,
    {
        "Trainer": "trainer",
        "TrainResult": "trainer",
        "TrainingError": "trainer",
        "Validator": "trainer",
        "Optimizer": "trainer",
        "Batches": "trainer",
        "EpochLog": "state",
        "TrainState": "state",
    },
)
