"""Benchmark: one process against torchrun on this machine, same config, same global batch.

For each negative strategy, trains the same config with ``towerkit train`` in one process
(``train.threads`` = all cores) and with ``towerkit train --nproc N`` (torchrun, gloo on CPU,
NCCL on a GPU; each process ``cores / N`` threads), and reports the training throughput of the
global batch (samples/s, median over epochs), the seconds of the whole run and the test
metrics side by side.

Run:
    python benchmarks/distributed.py                       # writes results/distributed.md
    python benchmarks/distributed.py --epochs 2 --nproc 2 --negatives in_batch   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from _results import write_keeping_notes  # benchmarks/_results.py

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "distributed.md"

NEGATIVES = {
    "full": ["negatives.kind=full"],
    "in_batch": ["negatives.kind=in_batch"],
    "mixed": ["negatives.kind=mixed", "negatives.n=1024", "negatives.shared=true"],
}


def train(config: Path, sets: list[str], nproc: int, out: Path, threads: int) -> dict:
    command = [sys.executable, "-m", "towerkit", "-q", "train", str(config), "--out", str(out)]
    for item in [*sets, f"train.threads={threads}"]:
        command += ["--set", item]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    return {
        "samples_per_second": statistics.median(e["samples_per_second"] for e in timing["epochs"]),
        "seconds_per_epoch": statistics.median(e["seconds"] for e in timing["epochs"]),
        "wall": wall,
        "epochs": len(timing["epochs"]),
        "best_epoch": metrics["train"]["best_epoch"],
        "test": metrics["test"],
        "popularity": metrics["popularity"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/ml-1m/youtube_dnn.yaml")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--negatives", nargs="+", default=list(NEGATIVES), choices=NEGATIVES)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for negatives in args.negatives:
            sets = [*NEGATIVES[negatives], f"train.epochs={args.epochs}", "train.patience=0"]
            for nproc in (1, args.nproc):
                out = Path(tmp) / f"{negatives}-{nproc}"
                threads = max(1, cores // nproc)
                result = train(args.config, sets, nproc, out, threads)
                rows.append({"negatives": negatives, "nproc": nproc, "threads": threads, **result})
                print(
                    f"{negatives:9s} {nproc} process(es) x {threads} thread(s): "
                    f"{result['samples_per_second']:,.0f} samples/s, "
                    f"test HR@10 {result['test']['hr@10']:.4f}",
                    flush=True,
                )
    write(args, rows, cores)


def write(args, rows: list[dict], cores: int) -> None:
    lines = [
        "# One process against torchrun",
        "",
        f"`python benchmarks/distributed.py --epochs {args.epochs} --nproc {args.nproc}` on "
        f"{date.today()}: {platform.machine()}, {cores} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}.",
        "",
        f"Config: `{args.config.relative_to(ROOT)}` with the negatives of each row, "
        f"{args.epochs} epochs (no early stop), the same global batch in every row. One "
        "process uses every core; under torchrun (gloo on CPU, loopback) each of the N "
        "processes uses cores / N threads. Samples/s: the global batch's training throughput, "
        "median over epochs (validation not counted).",
        "",
        "| negatives | processes x threads | samples/s | ratio | s/epoch | run s | best epoch "
        "| test HR@10 | test NDCG@10 | popularity HR@10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single = {r["negatives"]: r["samples_per_second"] for r in rows if r["nproc"] == 1}
    for r in rows:
        lines.append(
            f"| {r['negatives']} | {r['nproc']} x {r['threads']} | "
            f"{r['samples_per_second']:,.0f} | "
            f"{r['samples_per_second'] / single[r['negatives']]:.2f} | "
            f"{r['seconds_per_epoch']:.1f} | {r['wall']:.0f} | {r['best_epoch']} | "
            f"{r['test']['hr@10']:.4f} | {r['test']['ndcg@10']:.4f} | "
            f"{r['popularity']['hr@10']:.4f} |"
        )
    gpu = (
        f"GPU: {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "No GPU was available to this run: the NCCL rows are not measured (the code path "
        "is the same command with `train.device=cuda`; each rank takes its LOCAL_RANK's GPU)."
    )
    lines += ["", gpu, ""]
    write_keeping_notes(RESULTS, "\n".join(lines))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
