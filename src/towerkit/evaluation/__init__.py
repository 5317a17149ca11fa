"""Evaluation: exact full-catalogue ranking (or through an index), and what it found per user.

- :mod:`~towerkit.evaluation.evaluator`: :class:`Evaluator` and the query vectors;
- :mod:`~towerkit.evaluation.metrics`: the metric formulas, from target ranks (one home);
- :mod:`~towerkit.evaluation.outcomes`: per-user ranks saved with a run (numpy and pyarrow
  only, so reports load no model).
"""

from towerkit import _lazy

__all__ = [
    "DivergedError",
    "Evaluator",
    "Outcomes",
    "Queries",
    "best_interest_scores",
    "query_vectors",
    "ranking_metrics",
]

__getattr__, __dir__ = _lazy(
    __name__,
    {
        "DivergedError": "evaluator",
        "Evaluator": "evaluator",
        "Queries": "evaluator",
        "best_interest_scores": "evaluator",
        "check_interests": "evaluator",
        "query_vectors": "evaluator",
        "ranking_metrics": "metrics",
        "per_user": "metrics",
        "target_ranks": "metrics",
        "Outcomes": "outcomes",
    },
)
