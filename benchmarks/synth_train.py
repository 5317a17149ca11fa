"""Benchmark: train on the synthetic 10M-interaction log and beat popularity.

Writes the log with ``towerkit data synth`` (200k users, 100k items, 10M interactions, seed 0),
then trains ``configs/synth/youtube_dnn-10m.yaml`` on it with ``towerkit train`` (out-of-core
read, mixed negatives with log-q, sparse id tables, validation on a seeded sample of users)
and reports throughput and the test metrics against the popularity baseline.

Run:
    python benchmarks/synth_train.py                  # writes results/synth_train.md
    python benchmarks/synth_train.py --set train.epochs=1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "synth_train.md"
CONFIG = ROOT / "configs" / "synth" / "youtube_dnn-10m.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        subprocess.run(
            [sys.executable, "-m", "towerkit", "-q", "data", "synth", "--users", "200000",
             "--items", "100000", "--interactions", "10000000", "--seed", "0", "--out", str(log)],
            check=True,
        )  # fmt: skip
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "towerkit", "-q", "train", str(CONFIG), "--out", str(run),
                   "--set", f"data.path={log / 'interactions'}"]  # fmt: skip
        for override in args.overrides:
            command += ["--set", override]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        metrics = json.loads((run / "metrics.json").read_text())
        timing = json.loads((run / "timing.json").read_text())
        data = json.loads((run / "data.json").read_text())
    epochs = timing["epochs"]
    lines = [
        "# Training on the synthetic 10M log",
        "",
        f"`python benchmarks/synth_train.py{''.join(' --set ' + o for o in args.overrides)}` on "
        f"{date.today()}: {platform.machine()}, {os.cpu_count()} cores. Config: "
        f"`{CONFIG.relative_to(ROOT)}`; data: `towerkit data synth --users 200000 --items "
        "100000 --interactions 10000000 --seed 0`.",
        "",
        f"{data['interactions']:,} interactions, {data['n_users']:,} users, {data['n_items']:,} "
        f"items; {len(epochs)} epochs, best {metrics['train']['best_epoch']}; "
        f"{sum(e['samples_per_second'] for e in epochs) / len(epochs):,.0f} samples/s; the "
        f"whole run (read, train, validate, test, write) {wall / 60:.1f} min.",
        "",
        "| | HR@10 | NDCG@10 | HR@50 | MRR@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in (("valid (best epoch, sampled users)", metrics["valid"]),
                       ("test (sampled users)", metrics["test"]),
                       ("popularity (test)", metrics["popularity"])):  # fmt: skip
        lines.append(f"| {label} | {row['hr@10']:.4f} | {row['ndcg@10']:.4f} | "
                     f"{row['hr@50']:.4f} | {row['mrr@10']:.4f} |")  # fmt: skip
    lines.append("")
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
