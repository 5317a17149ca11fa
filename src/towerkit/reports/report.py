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
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from towerkit.files import atomic_write, check_writable
from towerkit.reports.analysis import ann_rows, check_projection, neighbours, recommendation_stats
from towerkit.reports.charts import (
    at_k_charts,
    bucket_charts,
    item_map_chart,
    recommendation_chart,
    training_charts,
)
from towerkit.reports.page import page, plotly_js, table
from towerkit.reports.views import ReportError, RunView, same_evaluation, unique_names
from towerkit.storage import location

logger = logging.getLogger(__name__)


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
    apart = [r.name for r in runs[1:] if not same_evaluation(runs[0].outcomes, r.outcomes)]
    # overlaid all the same (curves over epochs still compare), but said on the page and in
    # the log
    out["warnings"] = (
        [
            f"{', '.join(apart)} tested on other users or targets than {runs[0].name}: their "
            "test metrics overlay here but do not compare (towerkit compare refuses such a pair)"
        ]
        if apart
        else []
    )
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


_SCRIPT = """
const report = JSON.parse(document.getElementById('report-data').textContent);
for (const section of report.sections) {
  for (const chart of section.charts) {
    Plotly.newPlot(chart.id, chart.data, chart.layout, {responsive: true, displaylogo: false});
  }
}
"""


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
        return table(head, rows)
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
                table(
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
            parts.append(table(head, rows))
        return "".join(parts)
    raise ValueError(kind)


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
    return table(("test", *keys), rows)


def render_html(data: dict[str, Any], title: str, *, script_src: str | None = None) -> str:
    """The report's page in the page shell: Plotly embedded (or loaded from ``script_src``:
    the server's own copy)."""
    e = html.escape
    body = [f"<p class='note'>{e(w)}</p>" for w in data.get("warnings", [])]
    body.append(_summary(data["runs"]))
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
    body.append(f"<script type='application/json' id='report-data'>{payload}</script>")
    return page(title, body, script_src=script_src, scripts=[_SCRIPT])


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
    check_writable(Path(out))
    paths = [location(p) for p in paths]
    runs = [RunView.load(p, n) for p, n in zip(paths, unique_names(paths), strict=True)]
    data = report_data(runs, projection=projection)
    for warning in data["warnings"]:
        logger.warning("%s", warning)
    title = "towerkit report: " + ", ".join(r.name for r in runs)
    page = render_html(data, title)
    out = Path(out)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    logger.info("report of %d run(s) written to %s", len(runs), out)
    return data
