"""Benchmark: items training never saw, embedded from their features (`towerkit embed`), on
ML-1M.

10% of ML-1M's movies (seeded) are held out of training entirely: every interaction with them
is dropped from the log a DSSM trains on (`configs/ml-1m/dssm.yaml`'s model, reading the
movies' genres and year, and the users' gender, age and occupation). The held-out movies then
get vectors three ways:

- **features**: `towerkit embed` (the item tower on the unknown id's row and the movie's
  genres and year);
- **genre mean**: the mean vector of the warm movies with the same genre set (or, where there
  is none, of those sharing any genre);
- **random**: a random unit vector.

The test: every user with at least one held-out movie, at their first one. The query is the
user tower on the warm movies they saw before it (the last 50) and their side features. The
held-out movie is ranked among all 3,706 movies (warm ones by their trained vectors, held-out
ones by the vectors above), the user's earlier movies left out. HR@10, HR@50 and the mean
percentile rank (0 best) of each way.

Run:
    python benchmarks/cold_items.py                 # writes results/cold_items.md
    python benchmarks/cold_items.py --epochs 2      # a quick look
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
import pyarrow.parquet as pq
import torch

import towerkit
from _results import write_keeping_notes  # benchmarks/_results.py
from towerkit import datasets
from towerkit.retrieval import Retriever
from towerkit.retrieval.embed import embed_items

RESULTS = Path(__file__).parent / "results" / "cold_items.md"
HELD_OUT, MAX_LEN = 0.10, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load = os.getloadavg()
    rng = np.random.default_rng(args.seed)

    log = datasets.load("ml-1m", progress=False)
    frame, items, users = log.frame, log.items.copy(), log.users
    all_items = items["item"].to_numpy()
    cold = set(rng.choice(all_items, round(HELD_OUT * len(all_items)), replace=False).tolist())
    warm_log = frame[~frame["item"].isin(cold)]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm_log[["user", "item", "timestamp"]].to_parquet(folder / "log.parquet")
        items["genres"] = items["genres"].map(lambda g: "|".join(g))
        items[["item", "year", "genres"]].to_parquet(folder / "items.parquet")
        users[["user", "gender", "age", "occupation"]].to_parquet(folder / "users.parquet")
        config = {
            "data": {
                "path": str(folder / "log.parquet"),
                "max_len": MAX_LEN,
                "items": {"path": str(folder / "items.parquet"), "key": "item",
                          "features": {"year": "numeric", "genres": "multi"}},
                "users": {"path": str(folder / "users.parquet"), "key": "user",
                          "features": {"gender": "categorical", "age": "categorical",
                                       "occupation": "categorical"}},
            },
            "model": {"name": "dssm", "embedding_dim": 64, "id_dim": 64, "hidden": [256],
                      "dropout": 0.1, "pooling": "recency", "recent_items": 5},
            "temperature": {"value": 0.1},
            "train": {"epochs": args.epochs, "batch_size": 1024, "lr": 0.005,
                      "schedule": "cosine", "patience": 3, "progress": False},
        }  # fmt: skip
        start = time.perf_counter()
        run = towerkit.train(config, out=folder / "run")
        train_seconds = time.perf_counter() - start
        retriever = Retriever.from_run(run.path)
        cold_items = items[items["item"].isin(cold)]
        embed_items(run.path, cold_items[["item", "year", "genres"]], folder / "cold.parquet")
        embedded = pq.read_table(folder / "cold.parquet")
        cold_ids = embedded.column("item").to_pylist()
        featured = np.stack(embedded.column("vector").to_numpy(zero_copy_only=False))
        rows = evaluate(retriever, frame, items, users, cold_ids, featured, rng)
        warm_test = run.metrics["test"]
    write(rows, args, train_seconds, load, warm_test, len(cold), len(all_items))


def evaluate(retriever, frame, items, users, cold_ids, featured, rng) -> list[tuple]:
    warm_raw = retriever.item_vocab.raw
    warm = retriever.item_vectors  # [n_warm, D] in id order
    n_warm, n_cold = len(warm_raw), len(cold_ids)
    genres = items.set_index("item")["genres"].map(lambda g: frozenset(g.split("|")))
    warm_genres = genres.reindex(warm_raw).to_numpy()
    by_set = {}
    for row, g in enumerate(warm_genres):
        by_set.setdefault(g, []).append(row)

    def genre_mean(item) -> np.ndarray:
        wanted = genres[item]
        rows = by_set.get(wanted) or [r for r, g in enumerate(warm_genres) if g & wanted]
        return warm[rows].mean(0) if rows else warm.mean(0)

    ways = {
        "features (towerkit embed)": featured,
        "genre mean of warm items": np.stack([genre_mean(i) for i in cold_ids]),
        "random": rng.normal(size=featured.shape),
    }
    position = {item: n_warm + k for k, item in enumerate(cold_ids)}
    warm_position = {item: k for k, item in enumerate(warm_raw)}
    ordered = frame.sort_values(["user", "timestamp"], kind="stable")
    profile = users.set_index("user")[["gender", "age", "occupation"]]
    histories, targets, features, seen = [], [], [], []
    for user, group in ordered.groupby("user", sort=False):
        is_cold = group["item"].isin(position).to_numpy()
        if not is_cold.any():
            continue
        first = int(np.argmax(is_cold))
        before = group["item"].iloc[:first].tolist()
        warm_before = [i for i in before if i in warm_position]
        histories.append(retriever.encode_histories([warm_before[-MAX_LEN:]])[0])
        targets.append(position[group["item"].iloc[first]])
        features.append(profile.loc[user].to_dict())
        seen.append([warm_position.get(i, position.get(i)) for i in before])
    queries = torch.nn.functional.normalize(
        torch.from_numpy(retriever.history_queries(histories, features)), dim=-1
    )
    rows = []
    for name, cold_vectors in ways.items():
        table = torch.nn.functional.normalize(
            torch.from_numpy(np.concatenate([warm, cold_vectors]).astype(np.float32)), dim=-1
        )
        scores = queries @ table.T  # cosine, as the run scores
        for row, items_seen in enumerate(seen):
            scores[row, items_seen] = -float("inf")
        target_scores = scores[torch.arange(len(targets)), torch.tensor(targets)]
        rank = (scores > target_scores[:, None]).sum(1).numpy()  # 0-based
        rows.append((name, len(targets), (rank < 10).mean(), (rank < 50).mean(),
                     (rank / (n_warm + n_cold - 1)).mean()))  # fmt: skip
    return rows


def write(rows, args, train_seconds, load, warm_test, n_cold, n_items) -> None:
    lines = [
        "# Items training never saw",
        "",
        f"`python benchmarks/cold_items.py` on {date.today()}: {platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load average before the run "
        f"{load[0]:.2f}.",
        "",
        f"ML-1M with {n_cold:,} of its {n_items:,} movies (10%, seed {args.seed}) held out of "
        f"training entirely. DSSM (`configs/ml-1m/dssm.yaml`'s model: genres and year on the "
        f"item side, gender, age and occupation on the user side), {args.epochs} epochs, "
        f"trained in {train_seconds / 60:.1f} min; its leave-one-out test on the warm log: "
        f"HR@10 {warm_test['hr@10']:.4f}, NDCG@10 {warm_test['ndcg@10']:.4f}.",
        "",
        "Each user's first held-out movie, ranked among all movies (the user's earlier ones "
        "left out); the query is the user tower on their warm movies before it.",
        "",
        "| held-out movies' vectors | users | HR@10 | HR@50 | mean percentile rank |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, n, hr10, hr50, pct in rows:
        lines.append(f"| {name} | {n:,} | {hr10:.4f} | {hr50:.4f} | {pct:.3f} |")
    text = "\n".join(lines) + "\n"
    write_keeping_notes(RESULTS, text)
    print(text)


if __name__ == "__main__":
    main()
