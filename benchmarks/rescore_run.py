"""Re-score a run's exported vectors with an evaluator that shares no code with towerkit.

Reads ``users.parquet`` and ``items.parquet`` of a run directory and the data set's raw
interactions, rebuilds each user's sequence (time order, file order on ties), takes the last
item as the test target and everything before it as seen, scores every item with numpy under
the run's similarity, masks the seen items and prints HR@10 and NDCG@10 beside the run's
reported test metrics. The issues ask the two to agree within 0.002.

Run:
    python benchmarks/rescore_run.py RUN_DIR [--interactions PATH]
    # PATH defaults to $TOWERKIT_HOME (~/.cache/towerkit)/datasets/<dataset>/interactions.parquet
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def scores(users: np.ndarray, items: np.ndarray, similarity: str) -> np.ndarray:
    if similarity == "cosine":
        users = users / np.linalg.norm(users, axis=1, keepdims=True)
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
        return users @ items.T
    if similarity == "dot":
        return users @ items.T
    # euclidean: negative squared distance
    return -((users**2).sum(1)[:, None] - 2 * users @ items.T + (items**2).sum(1)[None, :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--interactions", type=Path, default=None)
    args = parser.parse_args()
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    similarity = config["similarity"]["name"]
    if similarity == "euclidean" and config["similarity"].get("normalize"):
        similarity = "cosine"  # the same ranking on normalised vectors
    home = Path(os.environ.get("TOWERKIT_HOME") or Path.home() / ".cache" / "towerkit")
    dataset = config["data"]["dataset"]
    path = args.interactions or home / "datasets" / dataset / "interactions.parquet"
    users = pd.read_parquet(args.run / "users.parquet")
    items = pd.read_parquet(args.run / "items.parquet")
    frame = pd.read_parquet(path, columns=["user", "item", "timestamp"])
    frame = frame.reset_index(names="row").sort_values(["user", "timestamp", "row"])
    sequences = frame.groupby("user")["item"].apply(list)

    column = {raw: i for i, raw in enumerate(items["item"])}
    matrix = scores(
        np.stack(users["vector"].to_numpy()).astype(np.float64),
        np.stack(items["vector"].to_numpy()).astype(np.float64),
        similarity,
    )
    hits, ndcg = [], []
    for row, raw_user in enumerate(users["user"]):
        sequence = [column[item] for item in sequences[raw_user]]
        target, seen = sequence[-1], sequence[:-1]
        user_scores = matrix[row]
        user_scores[seen] = -np.inf
        rank = int((user_scores > user_scores[target]).sum())
        hits.append(rank < 10)
        ndcg.append(1.0 / np.log2(rank + 2) if rank < 10 else 0.0)
    reported = json.loads((args.run / "metrics.json").read_text())["test"]
    print(f"{len(hits):,} users, {len(column):,} items, {similarity}, seen items masked")
    print(f"re-scored: HR@10 {np.mean(hits):.4f}  NDCG@10 {np.mean(ndcg):.4f}")
    print(f"reported:  HR@10 {reported['hr@10']:.4f}  NDCG@10 {reported['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
