"""Benchmark: MIND, ComiRec-SA and ComiRec-DR beside YouTubeDNN and SASRec, under two protocols.

- ``ours``: DESIGN.md's protocol (leave-one-out, the whole catalogue ranked, seen items masked),
  HR/NDCG at 10 and 50;
- ``comirec``: ComiRec's (Cen et al., KDD 2020): users divided 8:1:1 (seeded), validation and
  test users never trained on, the first 80% of their interactions the input and the rest the
  targets, the whole catalogue ranked with **nothing masked**, recall and hit rate at 20 and 50
  (``data.split.kind: held_out_users``, ``eval.mask_seen: false``).

Every model keeps its shipped ML-1M config (``configs/ml-1m/``); all of them read histories
only (no side features, so that held-out users are described the same way by every model).
Beauty (``amazon-beauty``, the S3-Rec file) changes only ``max_len`` (50) and the epochs.
Multi-interest models use K = 4 interests of the same width (64) as YouTubeDNN; a user is
ranked by the best score over their interests. ``comirec_sa_k1`` is ComiRec-SA with one
interest, to tell the cost of the split from the cost of the tower.

Run:
    python benchmarks/multi_interest.py                      # every row
    python benchmarks/multi_interest.py --only beauty-ours   # rows whose name contains the text
    python benchmarks/multi_interest.py --set train.epochs=2 # an override for every row

Each finished row replaces its line in ``results/multi_interest.md`` at once (so an interrupted
run keeps what it did), and its per-epoch metrics go to ``results/multi_interest.ROW.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from towerkit.config import load_config
from towerkit.data import Prepared
from towerkit.runs import pipeline

sys.path.insert(0, str(Path(__file__).parent))
from ml1m_matching import describe_negatives, put_row

RESULTS = Path(__file__).parent / "results" / "multi_interest.md"
CONFIGS = Path(__file__).parent.parent / "configs" / "ml-1m"

DATASETS = {
    # data set -> overrides (max_len and epochs only)
    "ml1m": ["data.dataset=ml-1m"],
    "beauty": ["data.dataset=amazon-beauty", "data.max_len=50", "train.epochs=10",
               "train.patience=3"],
}  # fmt: skip
PROTOCOLS = {
    "ours": ["eval.ks=[10,20,50]"],
    # nothing is masked in the ranking, so training does not exclude seen items either
    "comirec": ["data.split.kind=held_out_users", "eval.mask_seen=false", "eval.ks=[10,20,50]",
                "negatives.exclude_seen=false"],
}  # fmt: skip
MODELS = {
    "youtube_dnn": ("youtube_dnn.yaml", ["train.epochs=4"]),
    "comirec_sa": ("comirec_sa.yaml", []),
    # the same tower with one interest: tells a weaker architecture from the split into four
    "comirec_sa_k1": ("comirec_sa.yaml", ["model.interests=1"]),
    "comirec_dr": ("comirec_dr.yaml", []),
    "mind": ("mind.yaml", []),
    "sasrec": ("sasrec.yaml", ["train.epochs=10"]),
}
COMMON = ["data.user_features=[]", "data.item_features=[]", "train.progress=false"]
ROWS = [
    (f"{data}-{protocol}-{model}", data, protocol, model)
    for data in DATASETS
    for protocol in PROTOCOLS
    for model in MODELS
]

HEADER = (
    "| row | data | protocol | model | negatives | epochs (best) | s/epoch | HR@10 | NDCG@10 "
    "| HR@20 | recall@20 | HR@50 | recall@50 | NDCG@50 |\n"
    "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


METRICS = ("hr@10", "ndcg@10", "hr@20", "recall@20", "hr@50", "recall@50", "ndcg@50")


def cells(metrics: dict[str, float]) -> str:
    """The table's metric cells, in HEADER's order."""
    return " | ".join(f"{metrics[k]:.4f}" for k in METRICS) + " |\n"


def line(name: str, data: str, protocol: str, outcome: pipeline.RunOutcome) -> str:
    c, r = outcome.config, outcome.result
    k = getattr(c.model, "interests", None)
    model = c.model.name if k is None else f"{c.model.name}, K={k}"
    return (
        f"| {name} | {data} | {protocol} | {model} | {describe_negatives(c)} | "
        f"{len(r.epochs)} ({r.best_epoch}) | {r.seconds_per_epoch:.1f} | "
        + cells(outcome.metrics["test"])
    )


def popularity_line(data: str, protocol: str, outcome: pipeline.RunOutcome) -> str:
    return (
        f"| {data}-{protocol}-popularity | {data} | {protocol} | popularity | - | - | - | "
        + cells(outcome.popularity)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="rows containing this text")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Multi-interest models beside single-vector ones, under two protocols\n\n"
            f"`python benchmarks/multi_interest.py` ({date.today()}: {platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}). See the script's docstring "
            "for the protocols. Test metrics of the epoch with the best validation NDCG@10; "
            "`s/epoch` is training only.\n\n" + HEADER
        )
    by_name = {row[0]: row for row in ROWS}
    if args.only and all(name in by_name for name in args.only):  # full names: in that order
        rows = [by_name[name] for name in args.only]
    else:
        rows = [r for r in ROWS if not args.only or any(o in r[0] for o in args.only)]
    prepared: dict[tuple[str, str], Prepared] = {}
    for name, data, protocol, model in rows:
        config_file, model_overrides = MODELS[model]
        overrides = [*COMMON, *model_overrides, *DATASETS[data], *PROTOCOLS[protocol], *args.set]
        config = load_config(CONFIGS / config_file, overrides)
        key = (data, protocol)
        if key not in prepared:
            prepared[key] = pipeline.prepare(config.data, progress=False)
        start = time.perf_counter()
        outcome = pipeline.train(config, prepared[key])
        logging.info("%s done in %.0f s", name, time.perf_counter() - start)
        put_row(RESULTS, line(name, data, protocol, outcome))
        put_row(RESULTS, popularity_line(data, protocol, outcome))
        epochs = [
            {"epoch": e.epoch, "loss": e.loss, "seconds": e.seconds, "valid": e.valid}
            for e in outcome.result.epochs
        ]
        log = {"overrides": overrides, "test": outcome.metrics["test"], "epochs": epochs}
        RESULTS.with_name(f"multi_interest.{name}.json").write_text(json.dumps(log, indent=1))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
