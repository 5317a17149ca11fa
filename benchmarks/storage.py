"""Benchmark: a log read from an S3-compatible server on loopback against the same log on the
local disk, in one run.

The 100M-interaction synthetic log of ``data_scale.py`` (``towerkit data synth``: 2M users, 1M
items, Parquet shards) is written once, uploaded to moto's server (its server mode, in this
process, on a loopback port), and then prepared (``pipeline.prepare``: the out-of-core path)
three times, each in a fresh process:

- **local disk**: ``data.path`` the shards' directory;
- **bucket, cold**: ``data.path: s3://bench/interactions/`` with an empty ``TOWERKIT_HOME``:
  listing, downloading every object (8 at a time, each checked against its size and MD5
  ETag) into the cache, then the same preparation from the local view;
- **bucket, cached**: the same again: a listing, no download.

Run:
    python benchmarks/storage.py               # writes results/storage.md
    python benchmarks/storage.py --size 10m    # a smaller log (a quick look)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _results import write_keeping_notes  # benchmarks/_results.py

RESULTS = Path(__file__).parent / "results" / "storage.md"
SIZES = {
    "10m": {"users": 200_000, "items": 100_000, "interactions": 10_000_000},
    "100m": {"users": 2_000_000, "items": 1_000_000, "interactions": 100_000_000},
}

CHILD = """
import json, logging, resource, sys, time
from towerkit.config import config_from_dict
from towerkit.runs import pipeline
from towerkit.runs.preparation import localised
config = config_from_dict({"data": {"path": sys.argv[1]}})
start = time.perf_counter()
data, objects = localised(config.data, progress=False)
fetched = time.perf_counter() - start
prepared = pipeline.prepare(data, progress=False)  # (the local view: listed once)
seconds = time.perf_counter() - start
print(json.dumps({
    "seconds": seconds, "fetch": fetched, "objects": len(objects),
    "interactions": len(prepared.encoded), "fingerprint": prepared.fingerprint,
    "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
}))
"""


def synth(spec: dict, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "towerkit", "-q", "data", "synth", "--seed", "0", "--out", str(out),
         *(f"--{key}={value}" for key, value in spec.items())],
        check=True,
    )  # fmt: skip
    return out / "interactions"


def prepare(path: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, path], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100m", choices=SIZES)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    load = os.getloadavg()[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "benchmark",
        "AWS_SECRET_ACCESS_KEY": "benchmark",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(env)
    import fsspec

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shards = synth(SIZES[args.size], Path(tmp) / "synth")
        files = sorted(shards.rglob("*.parquet"))
        megabytes = sum(p.stat().st_size for p in files) / 2**20
        fs = fsspec.filesystem("s3")
        fs.mkdir("bench")
        start = time.perf_counter()
        fs.put(str(shards), "bench/interactions", recursive=True)
        upload = time.perf_counter() - start
        print(f"{len(files)} shards, {megabytes:.0f} MB uploaded in {upload:.1f} s", flush=True)
        home = Path(tmp) / "home"
        runs = [
            ("local disk", str(shards), Path(tmp) / "local-home"),
            ("bucket, cold (download + prepare)", "s3://bench/interactions/", home),
            ("bucket, cached (listing + prepare)", "s3://bench/interactions/", home),
        ]
        for name, path, towerkit_home in runs:
            rows[name] = prepare(path, {**env, "TOWERKIT_HOME": str(towerkit_home)})
            print(name, rows[name], flush=True)
    server.stop()
    fingerprints = {r["fingerprint"] for r in rows.values()}
    local = rows["local disk"]["seconds"]
    lines = [
        "# A log in a bucket against the same log on disk",
        "",
        f"`python benchmarks/storage.py --size {args.size}` on {date.today()}: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average {load:.2f} before the run.",
        "",
        f"The synthetic log ({SIZES[args.size]['interactions']:,} interactions, {len(files)} "
        f"Parquet shards, {megabytes:.0f} MB) on moto's S3 server on loopback (in the "
        f"benchmark's process: it shares the 2 cores with the reader), uploaded in "
        f"{upload:.1f} s. Each row is `pipeline.prepare` in a fresh process; *fetch* is the "
        "listing and the download into `$TOWERKIT_HOME` (each object checked against its size "
        "and MD5 ETag; s3fs and botocore imported and the client made), *seconds* the whole, "
        "preparation included.",
        "",
        "| source | objects | fetch s | seconds | vs local disk | peak RSS GB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['objects'] or '-'} | {r['fetch']:.1f} | {r['seconds']:.1f} | "
            f"{r['seconds'] / local:.2f}x | {r['peak_gb']:.2f} |"
        )
    same = "the same" if len(fingerprints) == 1 else "DIFFERENT"
    lines += ["", f"All three give {same} data fingerprint.", ""]
    write_keeping_notes(RESULTS, "\n".join(lines))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
