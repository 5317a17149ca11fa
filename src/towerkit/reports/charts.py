"""The report's charts as Plotly figures written as data: training curves, metrics at every K,
where a model fails, what it recommends, the item map."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from towerkit.evaluation.outcomes import (
    TIER_NAMES,
    popularity_percentiles,
    popularity_tiers,
    quantile_buckets,
)
from towerkit.reports.analysis import MAP_ITEMS, _map_vectors, project
from towerkit.reports.views import RunView

logger = logging.getLogger(__name__)


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


def item_map_chart(run: RunView, index: int, method: str = "pca") -> dict[str, Any]:
    """The item map of run ``index``: the most-trained items' vectors projected to 2-D (``pca`` or
    ``umap``), as a plotly figure dict."""
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
