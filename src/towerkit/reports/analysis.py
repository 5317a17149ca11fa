"""What a report measures from a run's files: recommendation statistics, the item map's
projection, nearest neighbours, an approximate index's cost."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np

from towerkit.errors import MissingExtra
from towerkit.evaluation.outcomes import (
    gini,
    popularity_percentiles,
)
from towerkit.reports.views import ReportError, RunView

logger = logging.getLogger(__name__)


#: the most items drawn on an item map (the most popular ones)
MAP_ITEMS = 5000
#: how many popular items get their nearest neighbours listed, and how many each
NEIGHBOUR_ITEMS, NEIGHBOURS = 6, 5


def recommendation_stats(run: RunView) -> dict[str, float]:
    """Coverage, Gini and popularity of the items recommended in the test users' top 10."""
    o = run.outcomes
    top = o.top[o.top > 0]
    counts = np.bincount(top, minlength=o.n_items + 1)[1:]
    percentile = popularity_percentiles(o.item_counts)
    return {
        "users": len(o),
        "coverage": float(np.count_nonzero(counts) / o.n_items),
        "gini": gini(counts),
        "recommended_percentile": float(percentile[top].mean()) if len(top) else float("nan"),
        "target_percentile": float(percentile[o.targets].mean()),
        "catalogue_percentile": float(percentile[1:].mean()),
    }


def check_projection(method: str) -> None:
    """Raise unless ``method`` is a projection this machine can run."""
    if method not in ("pca", "umap"):
        raise ReportError(f"unknown projection {method!r}; use pca or umap")
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise MissingExtra("the UMAP projection needs umap-learn: pip install 'towerkit[umap]'")


def project(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``[N, 2]``: the vectors' PCA projection (their two main directions), or UMAP's."""
    check_projection(method)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1)  # seeded: one job
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float64)
    centred = vectors - vectors.mean(0, keepdims=True)
    if len(centred) < 2:
        return np.zeros((len(centred), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))) if out.shape[1] < 2 else out


def _map_vectors(run: RunView) -> np.ndarray:
    """Item vectors as the run compares them (unit length under cosine similarity)."""
    v = run.vectors
    if run.config.similarity.name == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v


def neighbours(run: RunView) -> list[dict[str, Any]]:
    """The nearest neighbours (by the run's similarity) of the most popular items."""
    import torch

    o = run.outcomes
    popular = np.argsort(-o.item_counts[1:], kind="stable")[:NEIGHBOUR_ITEMS] + 1
    similarity = run.config.similarity.build()
    vectors = torch.from_numpy(run.vectors)
    scores = similarity.pairwise(vectors[popular - 1], vectors).numpy()
    scores[np.arange(len(popular)), popular - 1] = -np.inf  # not itself
    nearest = np.argsort(-scores, axis=1, kind="stable")[:, :NEIGHBOURS] + 1

    def name(item: int) -> str:
        return str(run.titles[item]) if run.titles is not None else str(item)

    return [
        {"item": name(i), "neighbours": [name(j) for j in row]}
        for i, row in zip(popular, nearest, strict=True)
    ]


def ann_rows(run: RunView) -> list[dict[str, Any]]:
    """Per K, the validation index's recall against exact search and the HR it cost (at the
    best epoch), where validation ranked through an approximate index."""
    valid = run.metrics.get("valid", {})
    rows = []
    recalls = {
        int(key.partition("@")[2]): value
        for key, value in valid.items()
        if key.startswith("index_recall@")
    }
    for k, recall in sorted(recalls.items()):
        exact, found = valid.get(f"exact_hr@{k}"), valid.get(f"hr@{k}")
        rows.append(
            {
                "k": k,
                "index_recall": recall,
                "hr": found,
                "exact_hr": exact,
                "hr_lost": None if exact is None or found is None else exact - found,
            }
        )
    return rows
