"""What runs learned, as pages: the report of one or more runs, a paired comparison of two,
and the one page shell every towerkit page shares.

- :mod:`~towerkit.reports.views`: :class:`RunView`, a run directory as the report reads it;
- :mod:`~towerkit.reports.analysis`: recommendation statistics, projections, neighbours;
- :mod:`~towerkit.reports.charts`: the charts as Plotly data;
- :mod:`~towerkit.reports.page`: the page shell (style, Plotly, tables);
- :mod:`~towerkit.reports.report`: ``towerkit report``;
- :mod:`~towerkit.reports.compare`: ``towerkit compare``.
"""

from towerkit import _lazy

__all__ = [
    "Comparison",
    "ReportError",
    "RunView",
    "compare_runs",
    "report_data",
    "write_comparison",
    "write_report",
]

__getattr__, __dir__ = _lazy(
    __name__,
    {
        **dict.fromkeys(["ReportError", "RunView", "unique_names"], "views"),
        **dict.fromkeys(
            ["ann_rows", "check_projection", "neighbours", "project", "recommendation_stats"],
            "analysis",
        ),
        **dict.fromkeys(
            ["at_k_charts", "bucket_charts", "epoch_series", "item_map_chart",
             "recommendation_chart", "training_charts"],
            "charts",
        ),
        **dict.fromkeys(["fmt", "page", "plotly_js", "table"], "page"),
        **dict.fromkeys(["render_html", "report_data", "write_report"], "report"),
        **dict.fromkeys(["Comparison", "compare_runs", "comparison_chart", "write_comparison"],
                        "compare"),
    },
)  # fmt: skip
