"""Starter configs: the settings we recommend for a log seen for the first time.

``towerkit data inspect LOG --write-config FILE`` writes one. They are the settings chosen on
Beauty's validation stage and run unchanged on the Amazon Toys and Yelp files
(``configs/s3rec/sasrec.yaml``, ``benchmarks/results/s3rec.md``): SASRec (2 blocks, D=64,
dropout 0.5, a causal frequency filter taking 70% of the token mixing) with the exact softmax
over the catalogue (a sampled one of 512 popular items, log-q corrected, past 100,000 items),
cosine similarity at temperature 0.05, learning rate 0.002 decayed to 0 over 50 epochs, a
history of the log's 95th-percentile user length (20 to 200 items), early stopping on
validation NDCG@10.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from towerkit.data.inspect import LogReport

#: past this many items the exact softmax gives way to a sampled one
FULL_SOFTMAX_ITEMS = 100_000

MODEL: dict[str, Any] = {
    "name": "sasrec",
    "embedding_dim": 64,
    "n_layers": 2,
    "n_heads": 1,
    "dropout": 0.5,
    "layer_norm": "pre",
    "filter_mix": 0.7,
    "filter_frequencies": 3,
}
TRAIN: dict[str, Any] = {
    "mode": "listwise",
    "epochs": 50,
    "batch_size": 64,
    "lr": 0.002,
    "schedule": "cosine",
    "patience": 5,
}


def starter_config(report: LogReport, data: dict[str, Any]) -> str:
    """A commented YAML config for a log: ``data`` is its data section (a known data set's
    name, or a path with its format and column map)."""
    max_len = int(min(200, max(20, round(report.per_user[0.95]))))
    negatives: dict[str, Any] = {"kind": "full"}
    if report.items > FULL_SOFTMAX_ITEMS:
        negatives = {"kind": "sampled", "n": 512, "sampler": "popularity", "shared": True}
    tree = {
        "data": {**data, "max_len": max_len, "split": {"kind": "leave_one_out"}},
        "model": dict(MODEL),
        "similarity": {"name": "cosine"},
        "temperature": {"value": 0.05},
        "negatives": negatives,
        "train": dict(TRAIN),
        "eval": {"ks": [10, 50]},
    }
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
        "# Settings: see towerkit/config/starter.py. Edit, then: towerkit train THIS_FILE",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(tree, sort_keys=False)
