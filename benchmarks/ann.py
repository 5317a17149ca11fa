"""Benchmark: approximate indexes against exact search, on ML-1M run vectors and at 1M items.

Part 1 (``--run RUN_DIR``, a YouTubeDNN run of ``configs/ml-1m/youtube_dnn.yaml``): the 6,040
test users' query vectors against the 3,706 item vectors, seen items excluded, as DESIGN.md's
protocol ranks them. For each index: HR@10 / NDCG@10 through the index, recall@10 and recall@50
of its top-K against exact top-K, build seconds and queries/s.

Part 2 (``--synthetic``): 1,000,000 x 64 clustered vectors and 10,000 queries drawn near the same
clusters (fixed seed), cosine. For each index and search setting: build seconds, index size,
queries/s, speed-up over exact search, recall@10 and recall@100. Every number of a table comes
from one run on one machine, so the speed-ups are like for like.

Part 3 (``--milvus``): Milvus Lite (the embedded Milvus, a local file) beside Faiss and Annoy
in one run, at 100,000 and 1,000,000 vectors of part 2's kind: the same HNSW and IVF build and
search settings for Faiss and Milvus, build seconds (Milvus: insert, index and load), queries/s
of top-10 searches and recall@10 against exact search.

Run:
    python benchmarks/ann.py --run runs/youtube_dnn      # part 1
    python benchmarks/ann.py --synthetic                 # part 2 (about 20 minutes on 2 cores)
    python benchmarks/ann.py --milvus                    # part 3 (about 20 minutes on 2 cores)

Writes benchmarks/results/ann.md (the parts are separate sections; a part that is not run
keeps its previous section).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from towerkit.index import make_index, recall_at_k

RESULTS = Path(__file__).parent / "results" / "ann.md"
log = logging.getLogger("ann")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Part 1: ML-1M run vectors
# ----------------------------------------------------------------------------------------------

ML1M_INDEXES: list[tuple[str, str, dict]] = [
    ("exact", "exact", {}),
    ("annoy (towerkit defaults)", "annoy", {}),
    ("annoy, n_trees=10, Annoy's search_k=-1 (torch-rechub's setting)", "annoy",
     {"n_trees": 10, "search_k": -1}),
    ("faiss-flat", "faiss-flat", {}),
    ("faiss-hnsw (defaults)", "faiss-hnsw", {}),
    ("faiss-ivf (defaults)", "faiss-ivf", {}),
]  # fmt: skip


def timed_search(kind: str, options: dict, items, users, similarity, exclude, k: int):
    """Build an index and search it: ids, build seconds and queries per second (exclusions
    included)."""
    index = make_index(kind, similarity, **options)
    start = time.perf_counter()
    index.build(items, ids=np.arange(1, len(items) + 1))
    build = time.perf_counter() - start
    start = time.perf_counter()
    ids, _ = index.search(users, k, exclude=exclude)
    return ids, build, len(users) / (time.perf_counter() - start)


def part_ml1m(run_dir: Path) -> str:
    from towerkit.runs import RunDir, pipeline

    run = RunDir(run_dir)
    config, model = run.config, run.load_model()
    prepared = pipeline.prepare(config.data, progress=False)
    pipeline.check_fingerprint(run, prepared)
    _, test = pipeline.evaluators(config, prepared)
    similarity = config.similarity.build()
    users = test.user_vectors(model)
    items = test.item_vectors(model)
    k = max(test.ks)
    exact_ids, _, exact_qps = timed_search("exact", {}, items, users, similarity, test.exclude, k)
    exact_metrics = test.evaluate_vectors(users, items, similarity)
    lines = [
        "| index | HR@10 | NDCG@10 | recall@10 vs exact | recall@50 vs exact | build s "
        "| queries/s | exact queries/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, kind, options in ML1M_INDEXES:
        if kind == "exact":
            m = exact_metrics
            lines.append(
                f"| {label} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | 1 | 1 | - | "
                f"{exact_qps:,.0f} | {exact_qps:,.0f} |"
            )
            continue
        ids, build, qps = timed_search(kind, options, items, users, similarity, test.exclude, k)
        m = test.ranking(ids)  # the metrics of the very lists that were timed
        lines.append(
            f"| {label} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | "
            f"{recall_at_k(ids, exact_ids, 10):.4f} | {recall_at_k(ids, exact_ids, 50):.4f} | "
            f"{build:.2f} | {qps:,.0f} | {exact_qps:,.0f} |"
        )
        log.info(lines[-1])
    return (
        f"## ML-1M YouTubeDNN run vectors\n\n`python benchmarks/ann.py --run {run_dir}` "
        f"({config.model.name}, {config.similarity.name}, D={items.shape[1]}): 6,040 test users "
        f"x {len(items):,} items, each user's seen items excluded (over-fetch and filter), K=50 "
        "lists. Exact test HR@10 of the run: "
        f"{exact_metrics['hr@10']:.4f}. Queries/s include exclusions and, for exact search, the "
        "scoring of the full catalogue.\n\n" + "\n".join(lines) + "\n"
    )


# ----------------------------------------------------------------------------------------------
# Part 2: 1M synthetic vectors
# ----------------------------------------------------------------------------------------------


def clustered(n: int, d: int, centers: np.ndarray, rng: np.random.Generator, spread: float):
    """Points around random cluster centres, in chunks (float32)."""
    out = np.empty((n, d), dtype=np.float32)
    for begin in range(0, n, 100_000):
        end = min(begin + 100_000, n)
        which = rng.integers(0, len(centers), end - begin)
        noise = rng.standard_normal((end - begin, d), dtype=np.float32) * spread
        out[begin:end] = centers[which] + noise
    return out


SYNTHETIC_INDEXES: list[tuple[str, dict, list[dict]]] = [
    # kind, build options, search settings swept on the one built index
    ("faiss-hnsw", {"M": 16, "ef_construction": 40},
     [{"ef_search": e} for e in (16, 32, 64, 128)]),
    ("faiss-ivf", {"nlist": 4096},
     [{"nprobe": p} for p in (8, 16, 32, 64)]),
    ("annoy", {"n_trees": 25, "n_jobs": -1},
     [{"search_k": s} for s in (-1, 10_000, 40_000)]),
]  # fmt: skip


# Noise as large as the centres' own scale: clusters overlap, so a query's neighbours span several
# of them and the search is not trivially easy (at spread 0.6 every index found the exact top-10).
SPREAD = 1.0


def part_synthetic(n: int, d: int, n_queries: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2_000, d), dtype=np.float32)
    vectors = clustered(n, d, centers, rng, spread=SPREAD)
    queries = clustered(n_queries, d, centers, rng, spread=SPREAD)
    log.info("synthetic data: %s vectors, %s queries", vectors.shape, queries.shape)

    exact = make_index("exact", "cosine").build(vectors)
    start = time.perf_counter()
    exact.search(queries, 10)
    exact_seconds = time.perf_counter() - start
    exact_ids, _ = exact.search(queries, 100)
    exact_qps = n_queries / exact_seconds
    log.info("exact: %.1f s, %.0f queries/s", exact_seconds, exact_qps)
    lines = [
        "| index | build options | search setting | build s | index MB | queries/s "
        "| speed-up vs exact | recall@10 | recall@100 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        f"| exact (torch) | - | - | - | {vectors.nbytes / 2**20:,.0f} | {exact_qps:,.0f} | 1.0 | "
        "1 | 1 |",
    ]
    for kind, build_options, settings in SYNTHETIC_INDEXES:
        index = make_index(kind, "cosine", **build_options)
        start = time.perf_counter()
        index.build(vectors)
        build_seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            size = dir_size(index.save(Path(tmp) / "index")) / 2**20
        log.info("%s built in %.0f s, %.0f MB", kind, build_seconds, size)
        for setting in settings:
            for key, value in setting.items():
                setattr(index, key, value)
            start = time.perf_counter()
            top10, _ = index.search(queries, 10)
            qps = n_queries / (time.perf_counter() - start)
            r10 = recall_at_k(top10, exact_ids[:, :10])
            r100 = recall_at_k(index.search(queries, 100)[0], exact_ids)
            opts = ", ".join(f"{k}={v}" for k, v in build_options.items())
            search = ", ".join(f"{k}={v}" for k, v in setting.items())
            lines.append(
                f"| {kind} | {opts} | {search} | {build_seconds:.0f} | {size:,.0f} | {qps:,.0f} | "
                f"{qps / exact_qps:.1f} | {r10:.4f} | {r100:.4f} |"
            )
            log.info(lines[-1])
        del index
    return (
        f"## Synthetic: {n:,} x {d} vectors, {n_queries:,} queries\n\n"
        f"`python benchmarks/ann.py --synthetic` (seed {seed}): vectors and queries drawn around "
        f"2,000 random centres (Gaussian, noise spread {SPREAD}), cosine similarity, no "
        "exclusions. `index MB` is the saved index on disk (exact: the raw vectors). Each search "
        "setting is applied to the one built index; queries/s and recall@10 come from top-10 "
        "searches, recall@100 from top-100 searches of the same setting.\n\n"
        + "\n".join(lines)
        + "\n"
    )


# Part 3: Milvus Lite beside Faiss and Annoy
# ----------------------------------------------------------------------------------------------

#: (label, kind, build options, search options): Faiss and Milvus share their settings
DATABASE_INDEXES: list[tuple[str, str, dict, dict]] = [
    ("faiss-hnsw", "faiss-hnsw", {"M": 16, "ef_construction": 40}, {"ef_search": 128}),
    ("milvus HNSW", "milvus", {"index_type": "HNSW", "M": 16, "ef_construction": 40},
     {"ef_search": 128}),
    ("faiss-ivf", "faiss-ivf", {"nlist": 1024}, {"nprobe": 16}),
    ("milvus IVF_FLAT", "milvus", {"index_type": "IVF_FLAT", "nlist": 1024}, {"nprobe": 16}),
    ("annoy", "annoy", {"n_trees": 25, "n_jobs": -1}, {"search_k": 40_000}),
    ("milvus FLAT", "milvus", {"index_type": "FLAT"}, {}),
]  # fmt: skip
#: FLAT scans every vector per query: measured at the smaller size only
FLAT_LIMIT = 200_000


def part_milvus(sizes: list[int], d: int, n_queries: int, seed: int) -> str:
    lines = [
        "| vectors | index | build options | search setting | build s | on disk MB | queries/s "
        "| recall@10 |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for n in sizes:
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((2_000, d), dtype=np.float32)
        vectors = clustered(n, d, centers, rng, spread=SPREAD)
        queries = clustered(n_queries, d, centers, rng, spread=SPREAD)
        exact = make_index("exact", "cosine").build(vectors)
        start = time.perf_counter()
        exact_ids, _ = exact.search(queries, 10)
        exact_qps = n_queries / (time.perf_counter() - start)
        lines.append(f"| {n:,} | exact (torch) | - | - | - | {vectors.nbytes / 2**20:,.0f} | "
                     f"{exact_qps:,.0f} | 1 |")  # fmt: skip
        del exact
        for label, kind, build_options, search_options in DATABASE_INDEXES:
            if label == "milvus FLAT" and n > FLAT_LIMIT:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                database = {"uri": str(Path(tmp) / "items.db")} if kind == "milvus" else {}
                index = make_index(kind, "cosine", **build_options, **search_options, **database)
                start = time.perf_counter()
                index.build(vectors)
                build_seconds = time.perf_counter() - start
                size = dir_size(index.save(Path(tmp) / "index")) / 2**20
                if kind == "milvus":
                    size += dir_size(Path(tmp) / "items.db") / 2**20
                index.search(queries[:50], 10)  # warm
                start = time.perf_counter()
                top10, _ = index.search(queries, 10)
                qps = n_queries / (time.perf_counter() - start)
                index.close()
            opts = ", ".join(f"{k}={v}" for k, v in build_options.items())
            search = ", ".join(f"{k}={v}" for k, v in search_options.items()) or "-"
            lines.append(
                f"| {n:,} | {label} | {opts} | {search} | {build_seconds:.1f} | {size:,.0f} | "
                f"{qps:,.0f} | {recall_at_k(top10, exact_ids):.4f} |"
            )
            log.info(lines[-1])
            del index
    sizes_text = " and ".join(f"{n:,}" for n in sizes)
    return (
        f"## Milvus Lite beside Faiss and Annoy: {sizes_text} x {d} vectors\n\n"
        f"`python benchmarks/ann.py --milvus` (seed {seed}): part 2's clustered vectors (noise "
        f"spread {SPREAD}), cosine, {n_queries:,} top-10 queries per row, no exclusions, one "
        "run. Milvus Lite is the embedded Milvus of the `milvus-lite` package (pure Python over "
        "Faiss, run inside this process and reached through pymilvus over loopback gRPC); its "
        "build is insert + index + load, and its size is the database directory plus the saved "
        "ids and attributes. Faiss and Milvus HNSW / IVF rows use the same settings. milvus "
        f"FLAT (a scan of every vector) is measured up to {FLAT_LIMIT:,} vectors. Milvus Lite "
        "writes a collection in segments of up to 128 MB (480,000 of these vectors), each with "
        "its own index, and searches all of them and merges: at 1,000,000 vectors its HNSW is "
        "three graphs (480k, 480k, 40k), not Faiss's one.\n\n" + "\n".join(lines) + "\n"
    )


def write_section(title_prefix: str, text: str) -> None:
    """Replace (or add) the section starting with ``title_prefix`` in the results file."""
    header = (
        f"# Approximate nearest-neighbour indexes against exact search\n\n"
        f"Last run {date.today()}: {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}.\n\n"
    )
    old = RESULTS.read_text() if RESULTS.exists() else ""
    sections = re.split(r"(?m)^(?=## )", old)[1:]
    sections = [s for s in sections if not s.startswith(title_prefix)] + [text]
    sections.sort(key=lambda s: 0 if s.startswith("## ML-1M") else 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(header + "\n".join(s.rstrip() + "\n" for s in sections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained ML-1M run directory")
    parser.add_argument("--synthetic", action="store_true", help="the 1M x 64 catalogue")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--milvus", action="store_true", help="Milvus Lite beside Faiss, Annoy")
    parser.add_argument("--milvus-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--milvus-queries", type=int, default=2_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.run and not args.synthetic and not args.milvus:
        parser.error("give --run RUN_DIR, --synthetic and/or --milvus")
    if args.run:
        write_section("## ML-1M", part_ml1m(args.run))
    if args.synthetic:
        write_section("## Synthetic", part_synthetic(args.n, args.dim, args.queries, args.seed))
    if args.milvus:
        part = part_milvus(args.milvus_sizes, args.dim, args.milvus_queries, args.seed)
        write_section("## Milvus Lite", part)
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
