"""Benchmark: the daily loop on ML-1M in time, a warm start on each increment against a full
retrain from scratch.

ML-1M's interactions are cut by global time (stable order, ties kept in file order) at the
76, 80, 84, 88, 92 and 96% quantiles: c(-1) .. c(4). The base is everything before c(0) (the
first 80%); the increments are the five 4% slices after it. Step k (0..4) holds the log up to
c(k+1) and splits it by time: training before c(k-1), validation (early stopping, the best
epoch) in [c(k-1), c(k)), test in [c(k), c(k+1)): each active user's items of the next period,
their history everything before c(k), seen items masked.

- **full**: a model trained from scratch at every step on everything before c(k-1);
- **warm**: step 0 is the same run; step k >= 1 continues step k-1's warm run
  (`train --from`): its training targets are only the increment that moved from validation
  into training, [c(k-2), c(k-1)) (`data.split.train_start`), with every user's whole history
  before it as input;
- **warm + replay**: the same, with a replay share of users whose older interactions train too
  (`data.split.replay`).

The model is the YouTubeDNN of `configs/ml-1m/youtube_dnn.yaml` (user features, recency
pooling, cosine at temperature 0.1) with in-batch negatives and log-q correction (the
`yt-inbatch-logq` row of ml1m_matching.md: full softmax costs 5 times the time for 0.005 of
HR@10). Each arm's wall time covers preparing, training, validating, ranking the test stage
and writing the run.

Run:
    python benchmarks/daily.py                # writes results/daily.md (~25 min on 2 cores)
    python benchmarks/daily.py --steps 2      # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from _results import write_keeping_notes  # benchmarks/_results.py
from towerkit import datasets
from towerkit.config import config_from_dict
from towerkit.runs import pipeline

RESULTS = Path(__file__).parent / "results" / "daily.md"
QUANTILES = (0.76, 0.80, 0.84, 0.88, 0.92, 0.96)


def config(folder: Path, step: int, cuts: list[int], args, train_start=None, replay=0.0):
    split = {"kind": "temporal", "valid_start": cuts[step], "test_start": cuts[step + 1]}
    if train_start is not None:
        split.update(train_start=train_start, replay=replay, seed=step)
    warm = train_start is not None
    return config_from_dict({
        "data": {
            "path": str(folder / f"log-{step}.parquet"), "max_len": 50, "split": split,
            "users": {"path": str(folder / "users.parquet"), "key": "user",
                      "features": {"gender": "categorical", "age": "categorical",
                                   "occupation": "categorical"}},
        },
        "model": {"name": "youtube_dnn", "embedding_dim": 64, "hidden": [256],
                  "activation": "gelu", "dropout": 0.1, "pooling": "recency",
                  "recent_items": 5},
        "similarity": {"name": "cosine"},
        "temperature": {"value": 0.1},
        "negatives": {"kind": "in_batch", "logq": True},
        "train": {"epochs": args.warm_epochs if warm else args.epochs, "batch_size": 1024,
                  "lr": args.warm_lr if warm else 0.005, "schedule": "cosine",
                  "patience": 3, "threads": 2, "progress": False},
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps 0..N-1 (at most 5)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--warm-epochs", type=int, default=4)
    parser.add_argument("--warm-lr", type=float, default=0.005)
    parser.add_argument("--replay", type=float, default=0.1)
    args = parser.parse_args()
    load = os.getloadavg()
    log = datasets.load("ml-1m", progress=False)
    frame = log.frame.iloc[np.argsort(log.frame["timestamp"].to_numpy(), kind="stable")]
    times = frame["timestamp"].to_numpy()
    # c(-1) .. c(4) and the end: cuts[i] is c(i - 1)
    cuts = [int(times[int(q * len(times))]) for q in QUANTILES] + [int(times[-1]) + 1]
    arms = {"full": None, "warm": 0.0, "warm + replay": args.replay}
    rows, parents = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log.users[["user", "gender", "age", "occupation"]].to_parquet(folder / "users.parquet")
        for step in range(min(args.steps, 5)):
            # step k: valid [c(k-1), c(k)) = cuts[k], cuts[k+1]; test to c(k+1) = cuts[k+2]
            frame[times < cuts[step + 2]][["user", "item", "timestamp"]].to_parquet(
                folder / f"log-{step}.parquet"
            )
            for arm, replay in arms.items():
                if step == 0 and arm != "full":  # step 0: every arm is the run from scratch
                    parents[arm] = parents["full"]
                    rows.append((step, arm, *rows[-1][2:]))
                    continue
                warm = replay is not None
                cfg = config(
                    folder, step, cuts, args,
                    train_start=cuts[step - 1] if warm else None, replay=replay or 0.0,
                )  # fmt: skip
                torch.manual_seed(0)
                start = time.perf_counter()
                outcome = pipeline.train(
                    cfg,
                    run=folder / f"{arm}-{step}".replace(" + ", "-"),
                    warm=parents[arm] if warm else None,
                )
                seconds = time.perf_counter() - start
                parents[arm] = outcome.run.path
                test, result = outcome.metrics["test"], outcome.result
                rows.append((
                    step, arm, outcome.run.data["train_interactions"],
                    result.epochs[0].samples_per_second * result.epochs[0].seconds,
                    f"{len(result.epochs)} ({result.best_epoch})", seconds,
                    test["hr@10"], test["ndcg@10"], test.get("hr@50", float("nan")),
                    outcome.popularity["hr@10"],
                ))  # fmt: skip
                print(rows[-1], flush=True)
    write(rows, args, load, cuts)


def write(rows, args, load, cuts) -> None:
    lines = [
        "# The daily loop: warm start against full retrain (ML-1M in time)",
        "",
        f"`python benchmarks/daily.py` on {date.today()}: {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}; load average before "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, nothing else running. "
        f"Full retrain: {args.epochs} epochs at most; warm start: {args.warm_epochs} epochs at "
        f"most, learning rate {args.warm_lr}; replay share {args.replay}. See the script's "
        "docstring for the protocol.",
        "",
        "| step | arm | train interactions | samples / epoch | epochs (best) | wall s | "
        "HR@10 | NDCG@10 | HR@50 | popularity HR@10 |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for step, arm, train, samples, epochs, seconds, hr, ndcg, hr50, pop in rows:
        lines.append(
            f"| {step} | {arm} | {train:,} | {samples:,.0f} | {epochs} | {seconds:.1f} | "
            f"{hr:.4f} | {ndcg:.4f} | {hr50:.4f} | {pop:.4f} |"
        )
    lines += ["", "Over steps 1.. (step 0 is one run for every arm):", ""]
    lines += [
        "| arm | HR@10 (mean) | of full | NDCG@10 (mean) | of full | wall s (sum) | of full |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    later = [r for r in rows if r[0] >= 1]
    full = [r for r in later if r[1] == "full"]
    for arm in dict.fromkeys(r[1] for r in later):
        mine = [r for r in later if r[1] == arm]
        hr, ndcg = np.mean([r[6] for r in mine]), np.mean([r[7] for r in mine])
        seconds = sum(r[5] for r in mine)
        lines.append(
            f"| {arm} | {hr:.4f} | {hr / np.mean([r[6] for r in full]):.1%} | {ndcg:.4f} | "
            f"{ndcg / np.mean([r[7] for r in full]):.1%} | {seconds:.0f} | "
            f"{seconds / sum(r[5] for r in full):.1%} |"
        )
    lines.append("")
    write_keeping_notes(RESULTS, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
