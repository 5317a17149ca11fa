"""``towerkit compare RUN_A RUN_B``: does B really beat A, or only by noise?

Both runs' test outcomes (``outcomes.parquet``) hold each test user's target ranks, so every
metric is paired user by user. For each metric at each K: the mean of A and of B, the mean
difference B - A with a paired bootstrap 95% interval (users resampled with replacement, the
same draw for both runs), and the two-sided p-value of the paired t-test. Runs of different
data have different test users and are refused; runs whose data fingerprints differ only
because their models read different side features of one log (SASRec without features against
YouTubeDNN with them) have the same test users, histories and targets, and are paired.
``popularity`` in place of B compares A with the most-popular-unseen baseline on A's own test
users.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from towerkit.evaluation.outcomes import PER_USER_METRICS, Difference, compare_outcomes
from towerkit.files import atomic_write
from towerkit.reports.page import page, table
from towerkit.reports.views import ReportError, RunView, same_evaluation, unique_names
from towerkit.storage import location

logger = logging.getLogger(__name__)

#: the name that stands for A's popularity baseline in place of a second run
POPULARITY = "popularity"


@dataclass
class Comparison:
    """B against A on ``users`` paired test users: one :class:`Difference` per metric at K."""

    a: str
    b: str
    users: int
    resamples: int
    confidence: float
    differences: list[Difference]


def compare_runs(
    a: str | Path,
    b: str | Path,
    *,
    ks: list[int] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Paired comparison of run ``b`` against run ``a`` (``b="popularity"``: A's baseline).

    Raises:
        ReportError: a run that cannot be read, or two runs of different data.
    """
    if resamples < 10:
        raise ReportError(f"--resamples {resamples}: use at least 10 (1,000 is the default)")
    a_path = location(a)
    versus_popularity = str(b) == POPULARITY and not Path(b).exists()
    if versus_popularity:
        run_a = RunView.load(a_path)
        run_b, name_b = run_a, f"{POPULARITY} ({run_a.name})"
    else:
        name_a, name_b = unique_names([a_path, location(b)])
        run_a, run_b = RunView.load(a_path, name_a), RunView.load(b, name_b)
        if run_a.fingerprint != run_b.fingerprint:
            if not same_evaluation(run_a.outcomes, run_b.outcomes):
                raise ReportError(
                    f"{a_path} and {b} were trained on different data (fingerprints "
                    f"{run_a.fingerprint[:12]} != {run_b.fingerprint[:12]}): their test users "
                    "differ, so there is nothing to pair; compare runs of the same data"
                )
            logger.info(
                "%s and %s read different side features (fingerprints %s, %s) of the same "
                "interactions: the same test users, histories and targets are paired",
                a_path, b, run_a.fingerprint[:12], run_b.fingerprint[:12],
            )  # fmt: skip
    depth = min(run_a.outcomes.depth, run_b.outcomes.depth)
    ks = sorted(set(ks or run_a.config.eval.ks))
    too_deep = [k for k in ks if not 1 <= k <= depth]
    if too_deep:
        raise ReportError(f"--k {too_deep[0]}: the runs keep ranks up to {depth}")
    try:
        differences = compare_outcomes(
            run_a.outcomes,
            run_b.outcomes,
            ks,
            b_popularity=versus_popularity,
            resamples=resamples,
            seed=seed,
        )
    except ValueError as err:
        raise ReportError(f"{a_path} and {b}: {err}") from None
    return Comparison(run_a.name, name_b, len(run_a.outcomes), resamples, 0.95, differences)


def comparison_chart(c: Comparison) -> dict[str, Any]:
    """Each metric's mean difference with its interval (a forest plot), by metric family."""
    traces = []
    for family in PER_USER_METRICS:
        rows = [d for d in c.differences if d.metric.startswith(f"{family}@")]
        if not rows:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": family,
                "y": [d.metric for d in rows],
                "x": [d.mean for d in rows],
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "array": [d.high - d.mean for d in rows],
                    "arrayminus": [d.mean - d.low for d in rows],
                },
                "text": [
                    f"{d.metric}: {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], p={d.p_value:.3g}"
                    for d in rows
                ],
                "hoverinfo": "text",
                "marker": {"size": 9},
            }
        )
    return {
        "id": "compare",
        "data": traces,
        "layout": {
            "title": {"text": f"{c.b} - {c.a}: mean per-user difference, 95% bootstrap interval"},
            "xaxis": {
                "title": {"text": "difference (B - A)"},
                "zeroline": True,
                "zerolinewidth": 2,
            },
            "yaxis": {"automargin": True},
            "height": 120 + 28 * len(c.differences),
            "margin": {"l": 90, "r": 20, "t": 50, "b": 50},
        },
    }


def write_comparison(c: Comparison, out: str | Path) -> None:
    """The comparison as a page in the page shell: its table and its chart."""
    rows = [
        (d.metric, d.mean_a, d.mean_b, f"{d.mean:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]",
         f"{d.p_value:.3g}", "yes" if d.significant else "no")
        for d in c.differences
    ]  # fmt: skip
    head = ("metric", "A", "B", "B - A", "95% interval", "p", "interval excludes 0")
    chart = json.dumps(comparison_chart(c), allow_nan=False).replace("</", "<\\/")
    body = [
        f"<p>{c.users:,} test users, paired; {c.resamples:,} bootstrap resamples; p: paired "
        "t-test</p>",
        table(head, rows),
        "<div id='compare'></div>",
    ]
    text = page(
        f"{c.b} vs {c.a}",
        body,
        scripts=[f"const c = {chart}; Plotly.newPlot('compare', c.data, c.layout);"],
    )
    atomic_write(Path(out), lambda tmp: tmp.write_text(text, encoding="utf-8"))
