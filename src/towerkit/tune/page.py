"""A study's page: its summary, Optuna's charts and every trial, in the one page shell."""

from __future__ import annotations

import html
import logging
import warnings
from pathlib import Path
from typing import Any

from towerkit.files import atomic_write
from towerkit.reports.page import page, table
from towerkit.tune.study import StudySummary, _optuna
from towerkit.tune.worker import _params_text

logger = logging.getLogger(__name__)


def write_page(study: Any, summary: StudySummary, out: Path) -> None:
    """The study's page: its summary, and Optuna's charts (history, learning curves with the
    pruned trials, parameter importances, parallel coordinates, slices), Plotly embedded."""
    optuna = _optuna()
    vis = optuna.visualization
    figures = [
        ("optimization history", vis.plot_optimization_history),
        ("validation per epoch (pruned trials stop early)", vis.plot_intermediate_values),
        ("parameter importances", vis.plot_param_importances),
        ("parallel coordinates", vis.plot_parallel_coordinate),
        ("each parameter against the objective", vis.plot_slice),
    ]
    e = html.escape
    parts = []
    for title, plot in figures:
        try:
            with warnings.catch_warnings():  # Optuna's doubts about few trials per value
                warnings.simplefilter("ignore")
                figure = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances of a single trial
            parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(str(err))}</p>")
            continue
        figure.update_layout(title=None, height=420, margin={"t": 30})
        if plot is vis.plot_intermediate_values:
            figure.update_layout(xaxis_title="epoch", yaxis_title=f"validation {summary.metric}")
        chart = figure.to_html(full_html=False, include_plotlyjs=False)
        parts.append(f"<h2>{e(title)}</h2>{chart}")
    rows = [
        ("objective", f"validation {summary.metric}"),
        (
            "trials",
            f"{summary.trials} ({summary.complete} complete, {summary.pruned} pruned, "
            f"{summary.failed} failed)",
        ),
        ("budget", summary.budget),
        ("wall time", f"{summary.wall_seconds:.0f} s (trials {summary.trial_seconds:.0f} s)"),
        ("best trial", f"{summary.best_trial}: {summary.metric} {summary.best_value:.4f}"),
        ("best settings", _params_text(summary.best_params)),
    ]
    if summary.base_trial is not None:
        value = "pruned" if summary.base_value is None else f"{summary.base_value:.4f}"
        rows.append(("base config", f"{summary.base_trial}: {summary.metric} {value}"))
    if summary.test is not None:
        rows.append(("test (once, best trial)", _metrics_text(summary.test)))
    if summary.popularity:
        rows.append(("popularity baseline", _metrics_text(summary.popularity)))
    parts.append("<h2>trials</h2>" + _trials_table(study))
    text = page(f"towerkit study: {summary.path}", [table(None, rows), *parts])
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _trials_table(study: Any) -> str:
    """Every trial: state, objective, epochs trained, settings, and why it failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
        note = t.user_attrs.get("error", "")
        settings = _params_text(t.params) + (f" ({note})" if note else "")
        rows.append((t.number, state, t.value, len(t.intermediate_values), settings))
    return table(("trial", "state", "value", "epochs", "settings"), rows, css="trials")


def _metrics_text(metrics: dict[str, float]) -> str:
    keys = [k for k in ("hr@10", "ndcg@10", "hr@50", "mrr@10") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)
