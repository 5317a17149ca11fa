"""Benchmark: SASRec, GRU4Rec and HSTU on ML-1M under DESIGN.md's protocol (and HSTU's tie
order), with time-to-accuracy.

Each row trains a shipped config (``configs/ml-1m/sasrec.yaml``, ``gru4rec.yaml``) or a variant,
evaluates validation *and* test after every epoch (test only to report the timeline: the best
epoch is still chosen on validation NDCG@10), and records the training seconds (evaluation
excluded) at which test HR@10 first reached each 0.01 step.

Run:
    python benchmarks/ml1m_sequential.py                   # every row
    python benchmarks/ml1m_sequential.py --only sasrec-full
    python benchmarks/ml1m_sequential.py --only sasrec-full --runs runs/bench  # + run dirs

Writes benchmarks/results/ml1m_sequential.md (rows are replaced by name, others kept) and
puts each row into benchmarks/results/ml1m_matching.md's table (replacing a row of that name).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from datetime import date
from pathlib import Path

import torch

from towerkit.config import load_config
from towerkit.runs import pipeline

sys.path.insert(0, str(Path(__file__).parent))
from ml1m_matching import put_row, row_line

RESULTS = Path(__file__).parent / "results" / "ml1m_sequential.md"
MATCHING = Path(__file__).parent / "results" / "ml1m_matching.md"
CONFIGS = Path(__file__).parent.parent / "configs" / "ml-1m"

# The shipped configs/ml-1m/sasrec.yaml is the row sasrec-width-96. Rows run before it shipped
# give the settings they were measured with.
OLD = ["model.embedding_dim=64", "model.dropout=0.2", "model.n_layers=2",
       "negatives.exclude_seen=false"]  # fmt: skip
HSTU_FULL = [
    "negatives={kind: full, exclude_seen: window}",
    "train.batch_size=64",
    "train.lr=0.002",
    "train.schedule=cosine",
    "train.epochs=25",
    "train.patience=5",
]
ROWS: list[tuple[str, str, list[str]]] = [
    # the SASRec shipped until 2026-11-29: dropout 0.2, 2 blocks, seen items are negatives
    ("sasrec-full", "sasrec.yaml", OLD),
    # sampled softmax: 256 popularity^0.75 negatives per window (shared by its positions), log-q
    ("sasrec-sampled-256", "sasrec.yaml",
     [*OLD, "negatives.kind=sampled", "negatives.n=256", "negatives.shared=true",
      "negatives.sampler=popularity"]),
    ("gru4rec-full", "gru4rec.yaml", []),
    # the same model scored by the dot product (vector norms may carry popularity)
    ("sasrec-dot", "sasrec.yaml", [*OLD, "similarity.name=dot", "temperature.value=1.0"]),
    # SASRec+'s dropout (Klenitskiy & Vasilev use 0.1)
    ("sasrec-dropout-0.1", "sasrec.yaml", [*OLD, "model.dropout=0.1"]),
    # the query's earlier items are not negatives (the evaluation masks seen items): all of
    # them, or only those of its window of 200
    ("sasrec-exclude-seen", "sasrec.yaml",
     ["model.embedding_dim=64", "model.n_layers=2", "negatives.exclude_seen=true"]),
    ("sasrec-exclude-window", "sasrec.yaml", ["model.embedding_dim=64", "model.n_layers=2"]),
    # and a third block
    ("sasrec-exclude-window-3-blocks", "sasrec.yaml", ["model.embedding_dim=64"]),
    # and wider: D=96 (feed-forward 384), ~1.25x an epoch: the shipped config
    ("sasrec-width-96", "sasrec.yaml", []),
    # and BSARec's low-pass token mixing (as on the Amazon files), the same share of the
    # spectrum as Beauty's 3 of 50: 12 of 200
    ("sasrec-width-96-filter-0.7", "sasrec.yaml",
     ["model.filter_mix=0.7", "model.filter_frequencies=12"]),
    # the shipped SASRec under HSTU's tie order (data.split.ties: hstu)
    ("sasrec-width-96-hstu-ties", "sasrec.yaml", ["data.split.ties=hstu"]),
    # HSTU: the paper's model with towerkit's SASRec training (full softmax, the window's seen
    # items not negatives, batches of 64, lr 0.002 decayed over 25 epochs), both tie orders
    ("hstu-full", "hstu.yaml", [*HSTU_FULL, "model.time_bias=false"]),
    ("hstu-full-hstu-ties", "hstu.yaml",
     [*HSTU_FULL, "model.time_bias=false", "data.split.ties=hstu"]),
    # and the paper's relative time bias (model.time_bias), as configs/ml-1m/hstu.yaml ships
    ("hstu-full-time-bias", "hstu.yaml", HSTU_FULL),
]  # fmt: skip


class Timeline:
    """Evaluates validation (returned, drives early stopping) and test (recorded) each epoch."""

    def __init__(self, valid, test) -> None:
        self.valid, self.test = valid, test
        self.points: list[dict] = []
        self.last_seconds = 0.0
        self.train_seconds = 0.0
        self._mark = time.perf_counter()

    def evaluate(self, model, similarity, device="cpu"):
        now = time.perf_counter()
        self.train_seconds += now - self._mark
        metrics = self.valid.evaluate(model, similarity, device)
        test = self.test.evaluate(model, similarity, device)
        self.points.append({"train_s": self.train_seconds, "valid": metrics, "test": test})
        self.last_seconds = time.perf_counter() - now
        self._mark = time.perf_counter()
        return metrics


def train_row(config, prepared, run=None):
    timelines = []

    def validate(valid, test):
        timelines.append(Timeline(valid, test))
        return timelines[-1]

    outcome = pipeline.train(config, prepared, run=run, validate=validate)
    timeline = timelines[0]
    split = prepared.split
    timeline.n_samples = int((split.train_end - split.sequences.offsets[:-1] - 1).clip(0).sum())
    return outcome, timeline


def steps_line(name: str, timeline: Timeline) -> str:
    """Training seconds at which test HR@10 first reached each 0.01 step."""
    reached: dict[str, float] = {}
    for point in timeline.points:
        hr = point["test"]["hr@10"]
        for step in range(1, int(hr * 100 + 1e-9) + 1):
            reached.setdefault(f"{step / 100:.2f}", point["train_s"])
    shown = [f"{k}: {v / 60:.1f} min" for k, v in reached.items() if float(k) >= 0.20]
    return f"- **{name}**: " + ", ".join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every row")
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="also write each row's run directory under this folder (what `towerkit train` "
        "writes, for benchmarks/rescore_run.py)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = [r for r in ROWS if not args.only or any(o in r[0] for o in args.only)]
    prepared = {}  # by data section: the tie order changes the split
    for name, config_file, overrides in rows:
        config = load_config(CONFIGS / config_file, [*overrides, *args.set])
        key = config.data.model_dump_json()
        if key not in prepared:
            prepared[key] = pipeline.prepare(config.data, progress=False)
        outcome, timeline = train_row(
            config, prepared[key], None if args.runs is None else args.runs / name
        )
        r, t = outcome.result, outcome.metrics["test"]
        best_time = timeline.points[r.best_epoch - 1]["train_s"]
        line = (
            f"| {name} | {config.model.name} | {describe(config)} | {len(r.epochs)} "
            f"({r.best_epoch}) | {r.seconds_per_epoch:.1f} | {r.samples_per_second:,.0f} | "
            f"{best_time / 60:.1f} | {r.train_seconds / 60:.1f} | {t['hr@10']:.4f} | "
            f"{t['ndcg@10']:.4f} | {t['hr@50']:.4f} | {t['mrr@10']:.4f} |"
        )
        logging.info(line)
        update(name, line, steps_line(name, timeline), timeline)
        put_row(MATCHING, row_line(name, outcome))
    print(RESULTS.read_text())


def describe(config) -> str:
    n = config.negatives
    if n.kind == "full":
        negatives = "full softmax"
    else:
        each = "per position" if n.shared is False else "per sequence"
        negatives = f"{n.n} sampled ({n.sampler}) {each}, log-q"
    ties = ", HSTU's tie order" if getattr(config.data.split, "ties", "") == "hstu" else ""
    times = ", time bias" if getattr(config.model, "time_bias", False) else ""
    return f"{config.train.mode.value}, {negatives}, {config.similarity.name}{times}{ties}"


HEADER = (
    "| row | model | training | epochs (best) | s/epoch | train samples/s | time to best (min) "
    "| wall time (min) | HR@10 | NDCG@10 | HR@50 | MRR@10 |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


def update(name: str, line: str, steps: str, timeline: Timeline) -> None:
    """Rewrite the results file with this row (and its timeline) replaced or added."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    rows = dict(re.findall(r"(?m)^\| (\S+) (\|.*)$", old))
    rows.pop("row", None)
    rows = {k: v for k, v in rows.items() if not k.startswith("---")}
    rows[name] = line[len(f"| {name} ") :]
    step_lines = dict(re.findall(r"(?m)^- \*\*(\S+)\*\*(.*)$", old))
    step_lines[name] = steps[len(f"- **{name}**") :]
    notes = old.partition("\n## Notes\n")[2]  # hand-written notes are kept
    RESULTS.write_text(
        "# SASRec, GRU4Rec and HSTU on ML-1M\n\n"
        f"`python benchmarks/ml1m_sequential.py` (last run {date.today()}: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}). DESIGN.md's "
        "protocol: leave-one-out, all 3,706 items ranked for all 6,040 users, seen items masked "
        "(rows marked *HSTU's tie order* order equal times as HSTU's preprocessing does: "
        "`data.split.ties: hstu`); "
        "test metrics of the epoch with the best validation NDCG@10. Training uses every "
        f"position of every user's training sequence ({timeline.n_samples:,} queries an epoch), "
        "one forward "
        "pass per window of 200. Times are training only (evaluation excluded), except `wall "
        "time`.\n\n"
        + HEADER
        + "".join(f"| {k} {v}\n" for k, v in rows.items())
        + "\n## Training time until test HR@10 first reached each step\n\n"
        + "".join(f"- **{k}**{v}\n" for k, v in step_lines.items())
        + (f"\n## Notes\n{notes}" if notes else "")
    )
    log_file = RESULTS.with_name(f"ml1m_sequential.{name}.json")
    log_file.write_text(json.dumps(timeline.points, indent=1) + "\n")


if __name__ == "__main__":
    main()
