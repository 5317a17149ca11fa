"""Starter configs: the settings we recommend for a log seen for the first time.

``towerkit data inspect LOG --write-config FILE`` writes one. The model is SASRec trained with
the exact softmax over the catalogue (a sampled one of 512 popular items, log-q corrected, past
100,000 items), cosine similarity at temperature 0.05, learning rate 0.002 decayed to 0, batch
64, early stopping on validation NDCG@10. What varies follows the log's shape, fitted to
the two regimes towerkit has tuned on validation (``configs/ml-1m/sasrec.yaml`` on ML-1M: 270
interactions per item, density 4.5%; ``configs/s3rec/sasrec.yaml`` on the Amazon and Yelp files:
14-16 per item, density 0.05-0.07%):

- **history** (``max_len``): the users' 99th-percentile length, 50 to 200 (a floor of 50 costs
  nothing: batches are cut to their longest window; on Beauty the 95th percentile, 21, gave
  the same test HR@10 as 50, 0.0894 against 0.0892, both with the seen-items exclusion);
- **blocks**: 3 for a history of 100 or more, else 2;
- **width**: from the catalogue size against the log, the interactions per item ``r``:
  ``D = 32 x round(2 + log10(r / 16) / log10(270 / 16))`` (64 at 16 per item, 96 at 270, 128
  past ~3,000), 32 to 256. The catalogue's size alone points the wrong way: ML-1M has the
  smallest catalogue and the widest tuned model, because each of its items is seen 270 times;
- **dropout**: from the density ``d``, 0.1 at ML-1M's 4.5% to 0.5 at Beauty's 0.073%, linear in
  ``log10 d`` between and clipped to 0.1-0.5, in steps of 0.05;
- **sparse or dense** (density under 1% or not): a sparse log gets the frequency filter
  (``filter_mix`` 0.7, BSARec's low-pass token mixing: +6% validation NDCG@10 on Beauty; not
  measured on dense logs); a dense one keeps the items a position's window has shown out of its
  negatives (``exclude_seen: window``: +4% test HR@10 on ML-1M; on Beauty and Toys it stopped
  training early and lost 5% and 8% of test HR@10);
- **epochs**: about 25 million training positions, 25 to 50 epochs.

``benchmarks/results/s3rec.md`` measures the starter against the tuned rows (rows
``*-starter-sasrec`` and the table in its notes); on ML-1M, Beauty and Toys it gives the tuned
configs setting for setting (``tests/test_starter.py``).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import yaml

from towerkit.data.inspect import LogReport

#: past this many items the exact softmax gives way to a sampled one
FULL_SOFTMAX_ITEMS = 100_000
#: the two tuned regimes the rules interpolate: (interactions per item, density, dropout)
SPARSE = (16.0, 0.000734, 0.5)  # Amazon Beauty (configs/s3rec/sasrec.yaml)
DENSE = (270.0, 0.0447, 0.1)  # MovieLens-1M (configs/ml-1m/sasrec.yaml)
#: a log sparser than this gets the frequency filter, a denser one the seen-items exclusion
SPARSE_BELOW = 0.01
#: training positions an epoch budget aims at (ML-1M: ~1M positions x 25 epochs)
POSITIONS = 25_000_000

TRAIN: dict[str, Any] = {
    "mode": "listwise",
    "batch_size": 64,
    "lr": 0.002,
    "schedule": "cosine",
    "patience": 5,
}


def history_length(report: LogReport) -> int:
    """The users' 99th-percentile length, 50 to 200."""
    return int(min(200, max(50, round(report.per_user[0.99]))))


def width(report: LogReport) -> int:
    """D from the interactions per item: 64 at 16, 96 at 270, in steps of 32 (32 to 256)."""
    per_item = report.rows / max(report.items, 1)
    steps = 2 + math.log10(max(per_item, 1e-9) / SPARSE[0]) / math.log10(DENSE[0] / SPARSE[0])
    return 32 * min(8, max(1, round(steps)))


def dropout(report: LogReport) -> float:
    """0.1 at ML-1M's density, 0.5 at Beauty's, linear in log10(density) between."""
    span = math.log10(DENSE[1]) - math.log10(SPARSE[1])
    where = (math.log10(DENSE[1]) - math.log10(max(report.density, 1e-12))) / span
    value = DENSE[2] + where * (SPARSE[2] - DENSE[2])
    return round(min(0.5, max(0.1, value)) * 20) / 20


def epochs(report: LogReport) -> int:
    """About :data:`POSITIONS` training positions (each user's last two items are held out and
    the first has no history), 25 to 50 epochs."""
    positions = max(report.rows - 3 * report.users, 1)
    return int(min(50, max(25, round(POSITIONS / positions))))


def starter_model(report: LogReport) -> dict[str, Any]:
    """The model section for a log (the module docstring's rules)."""
    max_len = history_length(report)
    model: dict[str, Any] = {
        "name": "sasrec",
        "embedding_dim": width(report),
        "n_layers": 3 if max_len >= 100 else 2,
        "n_heads": 1,
        "dropout": dropout(report),
        "layer_norm": "pre",
    }
    if report.density < SPARSE_BELOW:
        model.update(filter_mix=0.7, filter_frequencies=3)
    return model


def starter_tree(report: LogReport, data: dict[str, Any]) -> dict[str, Any]:
    """The config as a dict: ``data`` is its data section (a known data set's name, or a path
    with its format and column map); side features stay off (the tuned rows use none)."""
    negatives: dict[str, Any] = {"kind": "full"}
    if report.items > FULL_SOFTMAX_ITEMS:
        negatives = {"kind": "sampled", "n": 512, "sampler": "popularity", "shared": True}
    if report.density >= SPARSE_BELOW:
        negatives["exclude_seen"] = "window"
    return {
        "data": {**data, "max_len": history_length(report), "user_features": [],
                 "item_features": [], "split": {"kind": "leave_one_out"}},
        "model": starter_model(report),
        "similarity": {"name": "cosine"},
        "temperature": {"value": 0.05},
        "negatives": negatives,
        "train": {**TRAIN, "epochs": epochs(report)},
        "eval": {"ks": [10, 50]},
    }  # fmt: skip


def starter_config(report: LogReport, data: dict[str, Any]) -> str:
    """A commented YAML config for a log (:func:`starter_tree`)."""
    tree = starter_tree(report, data)
    span = report.time_span
    when = "no times: the file order is the time order" if span is None else (
        f"{span[0]:%Y-%m-%d} to {span[1]:%Y-%m-%d}"
    )  # fmt: skip
    header = [
        f"# Starter config written by `towerkit data inspect` on {dt.date.today()}.",
        f"# The log: {report.rows:,} interactions, {report.users:,} users, {report.items:,} "
        f"items, {report.per_user[0.5]:,.0f} per user (median); {when}.",
        f"# {report.short_users:,} users have fewer than 3 interactions (no training history "
        "under leave-one-out).",
        f"# From its shape: a history of {tree['data']['max_len']} (99% of users), width "
        f"{tree['model']['embedding_dim']} ({report.rows / max(report.items, 1):,.0f} "
        f"interactions per item), dropout {tree['model']['dropout']} (density "
        f"{report.density:.4%}), {tree['train']['epochs']} epochs.",
        "# The rules: towerkit/config/starter.py. Edit, then: towerkit train THIS_FILE",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(tree, sort_keys=False)
