"""``towerkit report``: what a run learned, as one self-contained HTML page of charts.

The page reads only run directories (no data set, no model forward pass): ``metrics.json`` for
the training curves, ``outcomes.parquet`` for everything measured per test user, and
``items.parquet`` for the item map. Its charts are Plotly figures written as JSON; Plotly's
JavaScript is embedded in the page (``pip install 'towerkit[report]'``), so it opens offline.

Sections, each overlaying every run given:

- training curves per epoch: loss, learning rate, temperature and each validation metric, the
  best epoch marked;
- HR, NDCG and recall at every K from 1 to the evaluation depth (200), beside the popularity
  baseline;
- where it fails: HR by user activity (history-length quartiles) and by target popularity
  (head / torso / tail: the most popular items holding the first, second and last third of
  training interactions), beside the popularity baseline;
- what it recommends: catalogue coverage of the top 10, Gini of recommendation counts, the
  popularity percentile of recommended items against the catalogue's and the test targets';
- an item map: a 2-D projection of the item vectors (PCA; UMAP with ``projection="umap"``
  where ``umap-learn`` is installed) coloured by a categorical side attribute (genre on
  MovieLens), titles on hover; and the nearest neighbours of the most popular items;
- where validation ranked through an approximate index: its recall against exact search and
  the HR it cost.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from towerkit.config import Config
from towerkit.errors import MissingExtra, TowerkitError
from towerkit.files import atomic_write
from towerkit.outcomes import (
    TIER_NAMES,
    Outcomes,
    gini,
    popularity_percentiles,
    popularity_tiers,
    quantile_buckets,
)
from towerkit.runs import (
    ITEMS_FILE,
    METRICS_FILE,
    OUTCOMES_FILE,
    RunDir,
    RunDirError,
)

logger = logging.getLogger(__name__)

#: the most items drawn on an item map (the most popular ones)
MAP_ITEMS = 5000
#: how many popular items get their nearest neighbours listed, and how many each
NEIGHBOUR_ITEMS, NEIGHBOURS = 6, 5
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


class ReportError(TowerkitError):
    """A run that cannot be reported: unfinished, or a file missing or damaged."""


@dataclass
class RunView:
    """What a report reads of one finished run."""

    name: str
    path: Path
    config: Config
    metrics: dict[str, Any]
    outcomes: Outcomes
    titles: np.ndarray | None  # by item id, index 0 padding
    labels: tuple[str, np.ndarray] | None
    vectors: np.ndarray  # [n_items, D] (a multi-interest model's items are still [n, D])
    fingerprint: str

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> RunView:
        """Read a run for a report.

        Raises:
            ReportError: the run is unfinished, or one of its files is missing or damaged
                (the message names the file, in one line).
        """
        path = Path(path)
        if not path.is_dir():
            raise ReportError(f"{path}: not a run directory (it does not exist)")
        try:
            run = RunDir(path)
            run.require_finished()
            config = run.config
            fingerprint = str(run.data["fingerprint"])
        except RunDirError as err:
            raise ReportError(str(err)) from None
        except (OSError, ValueError, KeyError) as err:
            raise ReportError(f"{path}: not a readable run directory ({err})") from None
        metrics = _read(path / METRICS_FILE, lambda p: json.loads(p.read_text()))
        if not isinstance(metrics, dict) or "test" not in metrics:
            raise ReportError(f"{path / METRICS_FILE}: damaged (no test metrics)")
        outcomes_path = path / OUTCOMES_FILE
        if not outcomes_path.exists():
            raise ReportError(
                f"{outcomes_path} is missing (a run written before towerkit kept per-user "
                f"outcomes); write it with: towerkit evaluate {path} --save"
            )
        try:
            outcomes = Outcomes.read(outcomes_path)
        except ValueError as err:
            raise ReportError(
                f"{err}; write it again with: towerkit evaluate {path} --save"
            ) from None
        items = _read(path / ITEMS_FILE, pq.read_table)
        try:
            meta = json.loads((items.schema.metadata or {}).get(b"towerkit", b"{}"))
            vectors = np.stack(items.column("vector").to_numpy(zero_copy_only=False)).astype(
                np.float32
            )
            titles = labels = None
            if "title" in items.column_names:
                titles = np.concatenate([[""], items.column("title").to_pylist()]).astype(object)
            if "label" in items.column_names:
                labels = (
                    str(meta.get("label", "label")),
                    np.concatenate([[""], items.column("label").to_pylist()]).astype(object),
                )
        except (KeyError, ValueError, TypeError) as err:
            raise ReportError(f"{path / ITEMS_FILE}: damaged ({err})") from None
        if len(vectors) != outcomes.n_items:
            raise ReportError(
                f"{path / ITEMS_FILE}: {len(vectors)} items, but {outcomes_path.name} ranks "
                f"{outcomes.n_items}; the run's files do not belong together"
            )
        return cls(
            name or path.name, path, config, metrics, outcomes, titles, labels, vectors, fingerprint
        )


def _read(path: Path, reader):
    if not path.exists():
        raise ReportError(f"{path} is missing")
    try:
        return reader(path)
    except Exception as err:  # any reader's complaint about a damaged file
        raise ReportError(f"{path}: damaged ({type(err).__name__}: {err})") from None


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Short names for runs: the folder name, with its parent where two share one."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return names


# -- charts -------------------------------------------------------------------------------------


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "margin": {"l": 55, "r": 15, "t": 40, "b": 45},
        "height": 320,
        "legend": {"orientation": "h", "y": -0.25},
        **extra,
    }


def _chart(chart_id: str, data: list[dict], layout: dict[str, Any]) -> dict[str, Any]:
    return {"id": chart_id, "data": data, "layout": layout}


def _finite(values: Sequence[float]) -> list[float | None]:
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]


#: per-epoch values logged beside the validation metrics
_LOGGED = ("loss", "lr", "temperature")
#: the validation metric families in the order their charts appear
_FAMILIES = ("hr", "ndcg", "recall", "mrr", "precision", "coverage", "index_recall", "exact_hr",
             "exact_ndcg")  # fmt: skip
_TRAINING_TITLES = {
    "loss": "training loss",
    "lr": "learning rate",
    "temperature": "temperature",
    "index_recall": "validation: index recall against exact search",
}


def epoch_series(metrics: dict[str, Any]) -> dict[str, dict[str, list[float | None]]]:
    """``{chart: {series: values per epoch}}`` from ``metrics.json``: the logged loss, learning
    rate and temperature, and each validation metric grouped by family (``hr``: hr@10, hr@50)."""
    epochs = metrics.get("train", {}).get("epochs", [])
    series: dict[str, dict[str, list[float | None]]] = {
        key: {key: _finite([e.get(key) for e in epochs])} for key in _LOGGED
    }
    names = dict.fromkeys(name for e in epochs for name in e.get("valid", {}))

    def order(name: str) -> tuple[int, str, int]:
        family, _, k = name.partition("@")
        known = _FAMILIES.index(family) if family in _FAMILIES else len(_FAMILIES)
        return known, family, int(k) if k.isdigit() else 0

    for name in sorted(names, key=order):
        values = _finite([e.get("valid", {}).get(name) for e in epochs])
        series.setdefault(name.partition("@")[0], {})[name] = values
    return series


def training_charts(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """Loss, learning rate, temperature and each validation metric family per epoch, every
    run overlaid; a star on each run's best epoch."""
    charts: dict[str, list[dict[str, Any]]] = {}
    for i, run in enumerate(runs):
        train = run.metrics.get("train", {})
        x = [e["epoch"] for e in train.get("epochs", [])]
        best = train.get("best_epoch")
        for chart, series in epoch_series(run.metrics).items():
            traces = charts.setdefault(chart, [])
            for j, (name, ys) in enumerate(series.items()):
                if all(v is None for v in ys):
                    continue  # e.g. the temperature of a checkpoint from before it was logged
                dash = ("solid", "dot", "dash", "dashdot")[j % 4]
                traces.append({
                    "type": "scatter", "mode": "lines+markers", "x": x, "y": ys,
                    "name": name if len(runs) == 1 else f"{run.name} {name}",
                    "line": {"color": _color(i), "dash": dash},
                })  # fmt: skip
                if best in x:
                    traces.append({
                        "type": "scatter", "mode": "markers", "x": [best],
                        "y": [ys[x.index(best)]], "name": f"best epoch ({run.name})",
                        "showlegend": j == 0,
                        "marker": {"symbol": "star", "size": 14, "color": _color(i),
                                   "line": {"width": 1, "color": "black"}},
                    })  # fmt: skip
    return [
        _chart(f"train-{chart}", traces,
               _layout(_TRAINING_TITLES.get(chart, f"validation {chart}@K"), "epoch", chart))
        for chart, traces in charts.items()
        if traces
    ]  # fmt: skip


def at_k_charts(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """HR, NDCG and recall at K = 1..depth, each run beside the popularity baseline."""
    charts = []
    baselines = _distinct_data(runs)
    for metric in ("hr", "ndcg", "recall"):
        traces = []
        for i, run in enumerate(runs):
            depth = run.outcomes.depth
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": run.name,
                    "x": list(range(1, depth + 1)),
                    "y": _finite(run.outcomes.curve(metric)),
                    "line": {"color": _color(i)},
                }
            )
        for j, run in enumerate(baselines):
            suffix = "" if len(baselines) == 1 else f" ({run.name})"
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"popularity{suffix}",
                    "x": list(range(1, run.outcomes.depth + 1)),
                    "y": _finite(run.outcomes.curve(metric, popularity=True)),
                    "line": {"color": "#555", "dash": ("dash", "dot", "dashdot")[j % 3]},
                }
            )
        charts.append(
            _chart(
                f"at-k-{metric}", traces, _layout(f"test {metric.upper()}@K", "K", f"{metric}@K")
            )
        )
    return charts


def _distinct_data(runs: Sequence[RunView]) -> list[RunView]:
    """One run per distinct data fingerprint (whose popularity baseline is shown)."""
    seen, out = set(), []
    for run in runs:
        if run.fingerprint not in seen:
            seen.add(run.fingerprint)
            out.append(run)
    return out


def _report_k(run: RunView) -> int:
    return 10 if run.outcomes.depth >= 10 else run.outcomes.depth


def bucket_charts(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """HR@10 by user activity and by target popularity, beside the popularity baseline."""
    by_activity, by_tier = [], []
    baselines = {id(r) for r in _distinct_data(runs)}
    for i, run in enumerate(runs):
        o, k = run.outcomes, _report_k(run)
        bucket, labels = quantile_buckets(o.history, 4)
        hr = o.per_user("hr", k)
        pop = o.per_user("hr", k, popularity=True)
        names = [
            f"{label} items<br>{np.sum(bucket == b):,} users" for b, label in enumerate(labels)
        ]
        means = [float(hr[bucket == b].mean()) for b in range(len(labels))]
        by_activity.append(
            {
                "type": "bar",
                "name": f"{run.name} HR@{k}",
                "x": names,
                "y": means,
                "marker": {"color": _color(i)},
            }
        )
        # per target: found in the top k or not (HR@k under leave-one-out)
        tiers = popularity_tiers(o.item_counts)[o.targets]
        found = (o.ranks > 0) & (o.ranks <= k)
        found_pop = (o.popularity_ranks > 0) & (o.popularity_ranks <= k)
        tier_names = [f"{TIER_NAMES[t]}<br>{np.sum(tiers == t):,} targets" for t in range(3)]

        def share(hit: np.ndarray, tiers=tiers) -> list[float | None]:
            return [float(hit[tiers == t].mean()) if np.any(tiers == t) else None for t in range(3)]

        by_tier.append(
            {
                "type": "bar",
                "name": f"{run.name} recall@{k}",
                "x": tier_names,
                "y": share(found),
                "marker": {"color": _color(i)},
            }
        )
        if id(run) in baselines:
            suffix = "" if len(baselines) == 1 else f" ({run.name})"
            by_activity.append(
                {
                    "type": "bar",
                    "name": f"popularity{suffix}",
                    "x": names,
                    "y": [float(pop[bucket == b].mean()) for b in range(len(labels))],
                    "marker": {"color": "#999"},
                }
            )
            by_tier.append(
                {
                    "type": "bar",
                    "name": f"popularity{suffix}",
                    "x": tier_names,
                    "y": share(found_pop),
                    "marker": {"color": "#999"},
                }
            )
    k = _report_k(runs[0])
    return [
        _chart(
            "by-activity",
            by_activity,
            _layout(
                f"HR@{k} by user activity (history-length quartiles)",
                "history length",
                f"HR@{k}",
                barmode="group",
            ),
        ),
        _chart(
            "by-popularity",
            by_tier,
            _layout(
                f"targets found in the top {k}, by target popularity",
                "target item",
                f"recall@{k}",
                barmode="group",
            ),
        ),
    ]


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


def recommendation_chart(runs: Sequence[RunView]) -> dict[str, Any]:
    """Share of recommendations (and of test targets) by catalogue-popularity decile."""
    deciles = [f"{10 * d}-{10 * d + 10}%" for d in range(10)]
    traces = []
    for i, run in enumerate(runs):
        o = run.outcomes
        percentile = popularity_percentiles(o.item_counts)
        top = o.top[o.top > 0]
        decile = np.minimum((percentile[top] // 10).astype(int), 9)
        traces.append(
            {
                "type": "bar",
                "name": f"{run.name}: recommended",
                "x": deciles,
                "y": (np.bincount(decile, minlength=10) / max(len(top), 1)).tolist(),
                "marker": {"color": _color(i)},
            }
        )
    o = runs[0].outcomes
    percentile = popularity_percentiles(o.item_counts)
    decile = np.minimum((percentile[o.targets] // 10).astype(int), 9)
    traces.append(
        {
            "type": "bar",
            "name": "test targets",
            "x": deciles,
            "y": (np.bincount(decile, minlength=10) / len(decile)).tolist(),
            "marker": {"color": "#999"},
        }
    )
    catalogue = np.minimum((percentile[1:] // 10).astype(int), 9)
    traces.append(
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "catalogue",
            "x": deciles,
            "y": (np.bincount(catalogue, minlength=10) / len(catalogue)).tolist(),
            "line": {"color": "black", "dash": "dot"},
        }
    )
    return _chart(
        "recommended-popularity",
        traces,
        _layout(
            "where the top 10 come from: share by catalogue popularity percentile",
            "item popularity percentile (training interactions)",
            "share",
            barmode="group",
        ),
    )


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


def item_map_chart(run: RunView, index: int, method: str = "pca") -> dict[str, Any]:
    o = run.outcomes
    counts = o.item_counts[1:]
    shown = np.argsort(-counts, kind="stable")[:MAP_ITEMS] + 1  # item ids
    xy = project(_map_vectors(run)[shown - 1], method)
    titles = run.titles[shown] if run.titles is not None else np.array([str(i) for i in shown])
    hover = [
        f"{t}<br>{c:,} training interactions"
        for t, c in zip(titles, counts[shown - 1], strict=True)
    ]
    traces = []
    if run.labels is not None:
        label_name, labels = run.labels
        values = labels[shown]
        for j, value in enumerate(sorted(set(values), key=lambda v: -np.sum(values == v))):
            keep = values == value
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": str(value),
                    "x": xy[keep, 0].round(4).tolist(),
                    "y": xy[keep, 1].round(4).tolist(),
                    "text": [h for h, k in zip(hover, keep, strict=True) if k],
                    "hoverinfo": "text",
                    "marker": {"size": 5, "opacity": 0.75, "color": _color(j) if j < 10 else None},
                }
            )
        colour = f", coloured by {label_name}"
    else:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "items",
                "x": xy[:, 0].round(4).tolist(),
                "y": xy[:, 1].round(4).tolist(),
                "text": hover,
                "hoverinfo": "text",
                "marker": {
                    "size": 5,
                    "opacity": 0.75,
                    "color": np.log1p(counts[shown - 1]).round(3).tolist(),
                    "colorscale": "Viridis",
                    "colorbar": {"title": {"text": "log count"}},
                },
            }
        )
        colour = ", coloured by log popularity"
    more = f" (the {MAP_ITEMS:,} most popular of {o.n_items:,})" if o.n_items > MAP_ITEMS else ""
    title = f"{run.name}: item vectors, {method.upper()}{colour}{more}"
    layout = _layout(title, f"{method} 1", f"{method} 2", height=560, hovermode="closest")
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 1}
    return _chart(f"item-map-{index}", traces, layout)


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


def report_data(
    runs: Sequence[RunView], *, projection: str = "pca", maps: bool = True
) -> dict[str, Any]:
    """Everything the page draws, as JSON-able data (the served page draws the same)."""
    if not runs:
        raise ReportError("no run to report")
    out: dict[str, Any] = {
        "runs": [
            {
                "name": r.name,
                "path": str(r.path),
                "model": r.config.model.name,
                "test": r.metrics.get("test", {}),
                "popularity": r.metrics.get("popularity", {}),
                "best_epoch": r.metrics.get("train", {}).get("best_epoch"),
                "index": r.config.eval.index,
                "recommended": recommendation_stats(r),
                "ann": ann_rows(r),
                "neighbours": neighbours(r),
            }
            for r in runs
        ],
        "sections": [
            {
                "title": "Training",
                "charts": training_charts(runs),
                "note": "per epoch; the star marks the best epoch (its weights are the run's)",
            },
            {
                "title": "Metrics at every K",
                "charts": at_k_charts(runs),
                "note": "the test stage, every K from 1 to the ranked depth; dashed: the "
                "most-popular-unseen baseline",
            },
            {
                "title": "Where it fails",
                "charts": bucket_charts(runs),
                "note": "users by history length (quartiles); targets by item popularity: head, "
                "torso and tail each hold a third of the training interactions",
            },
            {
                "title": "What it recommends",
                "charts": [recommendation_chart(runs)],
                "table": "recommended",
            },
        ],
    }
    if maps:
        out["sections"].append(
            {
                "title": "Item map",
                "charts": [item_map_chart(r, i, projection) for i, r in enumerate(runs)],
                "table": "neighbours",
                "note": "hover a point for its title; below, the nearest neighbours of the most "
                "popular items by the run's similarity",
            }
        )
    if any(r["ann"] for r in out["runs"]):
        out["sections"].append({"title": "Approximate index", "charts": [], "table": "ann"})
    return _json_safe(out)


def _json_safe(value: Any) -> Any:
    """NaN and infinity as null (JSON has neither)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


# -- the page -----------------------------------------------------------------------------------


def plotly_js() -> str:
    """Plotly's JavaScript bundle, from the installed ``plotly`` package."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MissingExtra("the report needs plotly: pip install 'towerkit[report]'") from None
    return get_plotlyjs()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 1.6em; }
.note { color: #666; font-size: 0.9em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 8px; }
.chart { min-height: 320px; } .chart.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
"""

_SCRIPT = """
const report = JSON.parse(document.getElementById('report-data').textContent);
for (const section of report.sections) {
  for (const chart of section.charts) {
    Plotly.newPlot(chart.id, chart.data, chart.layout, {responsive: true, displaylogo: false});
  }
}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _tables(kind: str, runs: list[dict[str, Any]]) -> str:
    e = html.escape
    if kind == "recommended":
        head = (
            "run",
            "test users",
            "coverage (top 10)",
            "Gini of counts",
            "mean popularity percentile: recommended",
            "test targets",
            "catalogue",
        )
        rows = [
            (
                r["name"],
                r["recommended"]["users"],
                r["recommended"]["coverage"],
                r["recommended"]["gini"],
                r["recommended"]["recommended_percentile"],
                r["recommended"]["target_percentile"],
                r["recommended"]["catalogue_percentile"],
            )
            for r in runs
        ]
        return _table(head, rows)
    if kind == "ann":
        parts = []
        for r in runs:
            if not r["ann"]:
                continue
            parts.append(
                f"<p>{e(r['name'])}: validation ranked through <b>{e(r['index'])}</b> "
                "(best epoch); HR lost = exact HR - HR through the index</p>"
            )
            parts.append(
                _table(
                    ("K", "index recall@K", "HR@K (index)", "HR@K (exact)", "HR lost"),
                    [
                        (a["k"], a["index_recall"], a["hr"], a["exact_hr"], a["hr_lost"])
                        for a in r["ann"]
                    ],
                )
            )
        return "".join(parts)
    if kind == "neighbours":
        parts = []
        for r in runs:
            rows = [(n["item"], *n["neighbours"]) for n in r["neighbours"]]
            width = max((len(row) for row in rows), default=1) - 1
            head = (f"{r['name']}: item", *[f"#{i + 1}" for i in range(width)])
            parts.append(_table(head, rows))
        return "".join(parts)
    raise ValueError(kind)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    e = html.escape
    out = ["<table><tr>", *[f"<th>{e(h)}</th>" for h in head], "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _summary(runs: list[dict[str, Any]]) -> str:
    keys = sorted(
        {k for r in runs for k in r["test"] if k.split("@")[0] in ("hr", "ndcg", "recall")},
        key=lambda k: (k.split("@")[0], int(k.split("@")[1])),
    )
    rows = []
    for r in runs:
        rows.append(
            (
                f"{r['name']} ({r['model']}, best epoch {r['best_epoch']})",
                *[r["test"].get(k) for k in keys],
            )
        )
    if runs:
        rows.append(("popularity baseline", *[runs[0]["popularity"].get(k) for k in keys]))
    return _table(("test", *keys), rows)


def render_html(data: dict[str, Any], title: str, *, script_src: str | None = None) -> str:
    """The page: Plotly embedded (or loaded from ``script_src``: the server's own copy)."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", _summary(data["runs"])]
    for section in data["sections"]:
        body.append(f"<h2>{e(section['title'])}</h2>")
        if section.get("note"):
            body.append(f"<p class='note'>{e(section['note'])}</p>")
        charts = section["charts"]
        if charts:
            body.append("<div class='grid'>")
            for chart in charts:
                wide = " wide" if chart["id"].startswith("item-map") else ""
                body.append(f"<div class='chart{wide}' id='{e(chart['id'])}'></div>")
            body.append("</div>")
        if section.get("table"):
            body.append(_tables(section["table"], data["runs"]))
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    plotly = (
        f"<script src='{e(script_src)}'></script>"
        if script_src
        else f"<script>{plotly_js()}</script>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>{_STYLE}</style>{plotly}</head><body>"
        + "\n".join(body)
        + f"<script type='application/json' id='report-data'>{payload}</script>"
        + f"<script>{_SCRIPT}</script></body></html>"
    )


def write_report(
    paths: Sequence[str | Path], out: str | Path, *, projection: str = "pca"
) -> dict[str, Any]:
    """Read the runs, write the page to ``out`` (atomically); returns the page's data.

    Raises:
        ReportError: a run that cannot be reported (the message names the file).
        MissingExtra: plotly (or umap-learn for ``projection="umap"``) is not installed.
    """
    plotly_js()  # the extras are there before any work
    check_projection(projection)
    paths = [Path(p) for p in paths]
    runs = [RunView.load(p, n) for p, n in zip(paths, unique_names(paths), strict=True)]
    data = report_data(runs, projection=projection)
    title = "towerkit report: " + ", ".join(r.name for r in runs)
    page = render_html(data, title)
    out = Path(out)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    logger.info("report of %d run(s) written to %s", len(runs), out)
    return data
