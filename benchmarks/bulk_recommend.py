"""Benchmark: recommendations for every user (`towerkit recommend --all-users`) on a synthetic
catalogue of a million users and a million items, exact and through Faiss HNSW, beside the limit
of this machine's matrix multiply measured in the same run.

The log is `towerkit data synth`'s (``--users 1000000 --items 1000000 --interactions
6000000``), held in memory. The model is a YouTubeDNN (embedding 64, recency pooling over the
last 50 items) whose item table is set to clustered unit vectors, one cluster per latent topic
of the log, as a trained model's are, and whose tower's one linear layer is the identity: a
user's query is the recency-weighted mean of their items' vectors, in the items' space, as a
trained tower's is near. Training it would change no cost measured here.

Each row runs :func:`towerkit.retrieval.bulk.recommend_all` (top 100, seen items left out, parts
of 10,000 users written to Parquet) on the first ``--users`` users, so the whole million is
not needed for a rate. The exact index scores 256 MB blocks (67 users x 1M items at a time).
The matmul rows time ``torch.mm`` alone on the exact path's block shape and on a large one:
the exact path's effective GFLOP/s (2 x users x items x D per second) set against them says
how much of the time is the scoring itself.

Run:
    python benchmarks/bulk_recommend.py                      # writes results/bulk_recommend.md
    python benchmarks/bulk_recommend.py --exact-users 2000 --hnsw-users 20000   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from _results import matmul_gflops, write_keeping_notes  # benchmarks/_results.py
from towerkit.data.sequences import Sequences
from towerkit.data.synth import SynthSpec, _chunks
from towerkit.data.vocab import Vocab
from towerkit.models import YouTubeDNN
from towerkit.nn import PooledTowerOptions
from towerkit.retrieval import Retriever
from towerkit.retrieval.bulk import recommend_all
from towerkit.retrieval.towers import TorchTower
from towerkit.similarity import Cosine
from towerkit.types import FeatureTable

RESULTS = Path(__file__).parent / "results" / "bulk_recommend.md"
DIM, MAX_LEN, K, MAX_BYTES = 64, 50, 100, 256 * 2**20


def build(users: int, items: int, interactions: int, seed: int = 0):
    """The synthetic log's histories and a YouTubeDNN whose item vectors cluster by topic."""
    spec = SynthSpec(users, items, interactions, seed=seed)
    cat, chunks = _chunks(spec)
    tables = list(chunks)
    user = np.concatenate([t.column("user").to_numpy() for t in tables])
    item = np.concatenate([t.column("item").to_numpy() for t in tables])
    stamp = np.concatenate([t.column("timestamp").to_numpy() for t in tables])
    sequences = Sequences.from_arrays(user, item, stamp, users)
    rng = np.random.default_rng(seed)
    topic_of = np.repeat(np.arange(len(cat.weights)), np.diff(cat.starts))  # by position
    centres = rng.normal(size=(len(cat.weights), DIM))
    vectors = np.zeros((items + 1, DIM), dtype=np.float32)
    vectors[cat.ids] = centres[topic_of] + 0.35 * rng.normal(size=(items, DIM))
    vectors[1:] /= np.linalg.norm(vectors[1:], axis=1, keepdims=True)
    model = YouTubeDNN(
        items, embedding_dim=DIM, max_len=MAX_LEN, share_embeddings=True,
        tower=PooledTowerOptions(hidden=(), pooling="recency"),
    )  # fmt: skip
    with torch.no_grad():
        model.item_embedding.weight.copy_(torch.from_numpy(vectors))
        # the tower's one linear layer as the identity: a user's query is the recency-weighted
        # mean of their items' vectors, in the items' space, as a trained tower's is near
        (layer,) = [m for m in model.user_tower.modules() if isinstance(m, torch.nn.Linear)]
        layer.weight.copy_(torch.eye(DIM))
        layer.bias.zero_()
    return sequences, model, vectors[1:]


def retriever_for(sequences, model, item_vectors, index: str, **options) -> Retriever:
    n_users, n_items = len(sequences.offsets) - 2, len(item_vectors)
    return Retriever(
        TorchTower(model),
        max_len=MAX_LEN,
        user_vocab=Vocab(np.arange(1, n_users + 1), name="user"),
        item_vocab=Vocab(np.arange(1, n_items + 1), name="item"),
        user_features=FeatureTable(),
        histories=(sequences.items, sequences.offsets),
        item_vectors=item_vectors,
        similarity=Cosine(),
        index=index,
        **options,
    )


def bulk(retriever: Retriever, users: int, folder: Path, name: str) -> float:
    """Seconds of one `recommend_all` over the first ``users`` users (towers, search, files)."""
    start = time.perf_counter()
    recommend_all(
        retriever, folder / f"{name}.parquet", k=K, users=np.arange(1, users + 1),
        progress=False,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=6_000_000)
    parser.add_argument("--exact-users", type=int, default=10_000)
    parser.add_argument("--hnsw-users", type=int, default=200_000)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    load = os.getloadavg()

    start = time.perf_counter()
    sequences, model, vectors = build(args.users, args.items, args.interactions)
    setup = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        exact = retriever_for(sequences, model, vectors, "exact", max_bytes=MAX_BYTES)
        bulk(exact, 200, folder, "warm")  # first-call costs out of the timed rows
        seconds = bulk(exact, args.exact_users, folder, "exact")
        rows.append(("exact", args.exact_users, 0.0, seconds))
        flops = 2 * args.exact_users * args.items * DIM / seconds / 1e9
        start = time.perf_counter()
        hnsw = retriever_for(sequences, model, vectors, "faiss-hnsw", ef_search=128)
        build_seconds = time.perf_counter() - start
        seconds = bulk(hnsw, args.hnsw_users, folder, "hnsw")
        rows.append(("faiss-hnsw (M 32, ef_search 128)", args.hnsw_users, build_seconds, seconds))
        exact_top = np.asarray(exact.search(exact.user_queries(np.arange(1, 1001)), 10).ids)
        hnsw_top = np.asarray(hnsw.search(hnsw.user_queries(np.arange(1, 1001)), 10).ids)
        recall = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(exact_top, hnsw_top, strict=True)]
        )
    block = max(1, MAX_BYTES // (4 * args.items))
    limits = [
        (f"[{block}, {DIM}] @ [{DIM}, {args.items:,}] (the exact path's block)",
         matmul_gflops(block, DIM, args.items)),
        ("[2048, 2048] @ [2048, 2048]", matmul_gflops(2048, 2048, 2048)),
    ]  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    lines = [
        "# Recommendations for every user",
        "",
        f"`python benchmarks/bulk_recommend.py` on {date.today()}: {platform.machine()}, torch "
        f"{torch.__version__}, {threads} threads, load average before the run "
        f"{load[0]:.2f}. Peak RSS of the whole run: {peak:.1f} GB.",
        "",
        f"`towerkit data synth` log: {args.users:,} users, {args.items:,} items, "
        f"{args.interactions:,} interactions (built in {setup:.0f} s); YouTubeDNN, embedding "
        f"{DIM}, recency pooling of the last {MAX_LEN} items, item vectors clustered by the "
        f"log's topics. `recommend_all`: top {K}, seen items left out, parts of 10,000 users "
        "to Parquet, the first N users.",
        "",
        "| index | users | build s | seconds | users / s | 1,000,000 users |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, users, built, seconds in rows:
        rate = users / seconds
        lines.append(
            f"| {name} | {users:,} | {built:.1f} | {seconds:.1f} | {rate:,.0f} | "
            f"{1_000_000 / rate / 60:.1f} min |"
        )
    lines += [
        "",
        f"HNSW recall@10 against exact search on 1,000 users: {recall:.4f}.",
        "",
        "The exact path against the machine's matrix multiply (float32, best of 3, same run):",
        "",
        "| | GFLOP/s | exact path / this |",
        "|---|---:|---:|",
        f"| the exact path, 2 x users x items x {DIM} per second | {flops:.1f} | - |",
    ]
    lines += [f"| torch.mm {shape} | {g:.1f} | {flops / g:.2f} |" for shape, g in limits]
    text = "\n".join(lines) + "\n"
    write_keeping_notes(RESULTS, text)
    print(text)


if __name__ == "__main__":
    main()
