"""Benchmark: from Parquet to a ready split at ML-1M, 10M and 100M interactions.

Each size runs in a fresh process (so its peak RSS is its own): ``pipeline.prepare`` of a
config whose ``data.path`` is a directory of Parquet shards, which takes the out-of-core path
(``towerkit.data.stream``: two passes of record batches, vocabularies by first appearance, a
counting sort into CSR, leave-one-out). The shards come from ``towerkit data synth`` (10M:
200k users / 100k items; 100M: 2M users / 1M items) and, for ML-1M, from the cached data set
written as Parquet; writing them is not timed.

Run:
    python benchmarks/data_scale.py                     # writes results/data_scale.md
    python benchmarks/data_scale.py --sizes ml-1m 10m   # without the 100M row
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from _results import write_keeping_notes  # benchmarks/_results.py

RESULTS = Path(__file__).parent / "results" / "data_scale.md"
SIZES = {
    "ml-1m": None,
    "10m": {"users": 200_000, "items": 100_000, "interactions": 10_000_000},
    "100m": {"users": 2_000_000, "items": 1_000_000, "interactions": 100_000_000},
}

CHILD = """
import json, resource, sys, time
from towerkit.runs import pipeline
from towerkit.config import config_from_dict
config = config_from_dict({"data": {"path": sys.argv[1]}})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
prepared = pipeline.prepare(config.data, progress=False)
seconds = time.perf_counter() - start
counts = prepared.split.counts()
print(json.dumps({
    "seconds": seconds, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "base_gb": base / 2**20, "interactions": len(prepared.encoded),
    "users": prepared.encoded.n_users, "items": prepared.encoded.n_items, **counts,
}))
"""


def write_shards(size: str, out: Path) -> Path:
    if size == "ml-1m":
        import pyarrow as pa
        import pyarrow.parquet as pq

        from towerkit import datasets

        frame = datasets.load("ml-1m", progress=False).frame[["user", "item", "timestamp"]]
        out.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "part-0.parquet")
        return out
    spec = SIZES[size]
    subprocess.run(
        [sys.executable, "-m", "towerkit", "-q", "data", "synth", "--seed", "0", "--out", str(out),
         *(f"--{key}={value}" for key, value in spec.items())],
        check=True,
    )  # fmt: skip
    return out / "interactions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            shards = write_shards(size, Path(tmp) / size)
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(shards)], capture_output=True, text=True
            )
            if done.returncode != 0:
                sys.exit(done.stderr[-3000:])
            rows[size] = json.loads(done.stdout.strip().splitlines()[-1])
            rows[size]["disk_mb"] = sum(p.stat().st_size for p in shards.iterdir()) / 2**20
            print(size, rows[size], flush=True)
    lines = [
        "# From Parquet to a ready split, as the log grows",
        "",
        f"`python benchmarks/data_scale.py` on {date.today()}: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "Each size in a fresh process: `pipeline.prepare` of a directory of Parquet shards "
        "(the out-of-core path: two passes of 1M-row record batches, vocabularies by first "
        "appearance in time order, a counting sort into CSR, leave-one-out). Peak RSS is the "
        "whole process's, torch and pandas imports included (base: after imports).",
        "",
        "| log | interactions | users | items | Parquet MB | seconds | s per 10M | peak RSS GB "
        "| base GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in rows.items():
        lines.append(
            f"| {size} | {r['interactions']:,} | {r['users']:,} | {r['items']:,} | "
            f"{r['disk_mb']:.0f} | {r['seconds']:.1f} | "
            f"{r['seconds'] / r['interactions'] * 1e7:.1f} | {r['peak_gb']:.2f} | "
            f"{r['base_gb']:.2f} |"
        )
    lines += ["", "Targets (issue 14): 100M interactions in <= 180 s with peak RSS <= 4 GB.", ""]
    write_keeping_notes(RESULTS, "\n".join(lines))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
