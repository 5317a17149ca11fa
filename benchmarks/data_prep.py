"""Benchmark: ML-1M from cache to one full pass of training batches.

Times each stage of the data chain on ML-1M and the process's peak resident memory:

    load (Parquet cache) -> encode (ids + side features) -> split (CSR + leave-one-out)
    -> one full pass of batch construction (batch 1024, max_len 50)

Run:
    python benchmarks/data_prep.py            # prints the table, writes results/data_prep.md

The chain is run ``--repeats`` times in one process; the table gives the median seconds of each
stage and the peak RSS of the whole process (torch, numpy and pandas included).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from towerkit import datasets
from towerkit.data import Sequences, TrainingBatches, encode, leave_one_out

RESULTS = Path(__file__).parent / "results" / "data_prep.md"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_chain(batch_size: int, max_len: int) -> dict[str, float]:
    spec = datasets.get_spec("ml-1m")
    times = {}
    t = time.perf_counter()
    interactions = datasets.load("ml-1m", progress=False)
    times["load"] = time.perf_counter() - t

    t = time.perf_counter()
    encoded = encode(
        interactions, user_features=spec.user_features, item_features=spec.item_features
    )
    times["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    split = leave_one_out(Sequences.from_encoded(encoded))
    times["split"] = time.perf_counter() - t

    t = time.perf_counter()
    batches = TrainingBatches(split, batch_size=batch_size, max_len=max_len, seed=0)
    samples = 0
    for batch in batches.epoch(0):
        samples += len(batch)
    times["batches"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    times["samples"] = samples
    times["n_batches"] = len(batches)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    datasets.fetch("ml-1m", progress=False)  # not timed: the benchmark starts from the cache
    rss_before = peak_rss_mb()
    runs = [run_chain(args.batch_size, args.max_len) for _ in range(args.repeats)]
    peak = peak_rss_mb()

    stages = ["load", "encode", "split", "batches", "total"]
    median = {s: statistics.median(r[s] for r in runs) for s in stages}
    lines = [
        "# Data preparation on ML-1M",
        "",
        f"`python benchmarks/data_prep.py --repeats {args.repeats}` on {date.today()}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}.",
        "",
        f"Chain: load from the Parquet cache -> encode (ids by first appearance, user features "
        f"gender/age/occupation, item features year/genres) -> CSR sequences + leave-one-out -> "
        f"one full pass of batch construction ({runs[0]['samples']:,} samples, "
        f"{runs[0]['n_batches']} batches of {args.batch_size}, max_len {args.max_len}).",
        "",
        "| stage | median s | runs (s) |",
        "|---|---:|---|",
    ]
    for stage in stages:
        shown = ", ".join(f"{r[stage]:.3f}" for r in runs)
        lines.append(f"| {stage} | {median[stage]:.3f} | {shown} |")
    lines += [
        "",
        f"Peak RSS of the process: {peak:,.0f} MB ({rss_before:,.0f} MB after imports and the "
        "cache check, before the first run).",
        "",
        f"Target: the whole chain under 3 s and under 1 GB peak. Result: "
        f"{median['total']:.2f} s, {peak:,.0f} MB.",
        "",
        "For scale (numbers quoted from the issue, measured on this kind of machine, not rerun "
        "here): torch-rechub's `generate_seq_feature_match` + `gen_model_input` take 28 s for the "
        "same step with YouTubeDNN's inputs, and 89 s with an 11 GB peak with DSSM's.",
    ]
    table = "\n".join(lines) + "\n"
    sys.stdout.write(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table)


if __name__ == "__main__":
    main()
