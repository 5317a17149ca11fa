"""The retrieval task: what turns query vectors and positive ids into one training loss.

- :mod:`~towerkit.task.objectives`: the training modes (point-wise, pair-wise, list-wise) as
  pure functions of logits;
- :mod:`~towerkit.task.negatives`: the candidate strategies (sampled, in-batch, mixed, full);
- :mod:`~towerkit.task.retrieval`: :class:`RetrievalTask`, built once from those.
"""

from towerkit import _lazy

__all__ = ["Mode", "RetrievalTask", "get_objective", "parse_mode"]

__getattr__, __dir__ = _lazy(
    __name__,
    {
        "RetrievalTask": "retrieval",
        "Mode": "objectives",
        "get_objective": "objectives",
        "parse_mode": "objectives",
    },
)
