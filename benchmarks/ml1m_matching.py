"""Benchmark: DSSM and YouTubeDNN on ML-1M under DESIGN.md's protocol.

Leave-one-out, full-catalogue ranking with each user's history masked, metrics over all 6,040
users. Rows: each training mode, each negative strategy (list-wise, cosine), dot and Euclidean
for the best setting, a temperature sweep, and popularity. The throughput comparison at
torch-rechub's example size is benchmarks/rechub_throughput.py.

Run:
    python benchmarks/ml1m_matching.py                 # every row; writes results/ml1m_matching.md
    python benchmarks/ml1m_matching.py --only yt-full   # rows whose name contains the text

Each finished row is appended to the table at once, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from towerkit.config import Config, config_from_dict, load_config
from towerkit.runs import pipeline

RESULTS = Path(__file__).parent / "results" / "ml1m_matching.md"
CONFIGS = Path(__file__).parent.parent / "configs" / "ml-1m"

# name -> (config file, overrides). Sweep rows use few epochs; the headline rows use the
# shipped configs as they are.
ROWS: list[tuple[str, str, list[str]]] = [
    ("yt-full", "youtube_dnn.yaml", []),
    ("dssm-full", "dssm.yaml", []),
    # the three modes (32 uniform negatives for point- and pair-wise: on ML-100K, popularity^0.75
    # negatives without a softmax to correct pushed HR@10 below the popularity baseline)
    ("yt-pointwise", "youtube_dnn.yaml",
     ["train.mode=pointwise", "negatives.kind=sampled", "negatives.n=32", "train.epochs=4"]),
    ("yt-pairwise", "youtube_dnn.yaml",
     ["train.mode=pairwise", "negatives.kind=sampled", "negatives.n=32", "train.epochs=4"]),
    # DSSM's item tower is an MLP: 32 negatives per query would run it over 32k items a step
    # (6 min an epoch), so its rows share one draw of 32 across the batch.
    ("dssm-pointwise", "dssm.yaml",
     ["train.mode=pointwise", "negatives.kind=sampled", "negatives.n=32",
      "negatives.shared=true", "train.epochs=3"]),
    ("dssm-pairwise", "dssm.yaml",
     ["train.mode=pairwise", "negatives.kind=sampled", "negatives.n=32",
      "negatives.shared=true", "train.epochs=3"]),
    # list-wise negatives, cosine
    ("yt-sampled", "youtube_dnn.yaml",
     ["negatives.kind=sampled", "negatives.n=256", "negatives.shared=true",
     "negatives.sampler=popularity", "train.epochs=4"]),
    ("yt-inbatch-logq", "youtube_dnn.yaml",
     ["negatives.kind=in_batch", "negatives.logq=true", "train.epochs=4"]),
    ("yt-inbatch-nologq", "youtube_dnn.yaml",
     ["negatives.kind=in_batch", "negatives.logq=false", "train.epochs=4"]),
    ("yt-mixed", "youtube_dnn.yaml",
     ["negatives.kind=mixed", "negatives.n=256", "negatives.shared=true",
     "negatives.sampler=popularity", "train.epochs=4"]),
    # similarity and temperature for the best setting (full softmax), 2 epochs each so that
    # the rows compare with one another (and with yt-t0.1, the same 2-epoch budget at t=0.1)
    ("yt-dot", "youtube_dnn.yaml", ["similarity.name=dot", "temperature.value=1.0",
                                    "train.epochs=2"]),
    ("yt-euclidean", "youtube_dnn.yaml", ["similarity.name=euclidean", "similarity.normalize=true",
                                          "temperature.value=0.2", "train.epochs=2"]),
    ("yt-t0.1", "youtube_dnn.yaml", ["train.epochs=2"]),
    ("yt-t0.05", "youtube_dnn.yaml", ["temperature.value=0.05", "train.epochs=2"]),
    ("yt-t0.2", "youtube_dnn.yaml", ["temperature.value=0.2", "train.epochs=2"]),
    ("yt-t1.0", "youtube_dnn.yaml", ["temperature.value=1.0", "train.epochs=2"]),
    # multi-interest towers (issue 15): K = 4, label-aware, ranked by the best interest
    ("comirec_sa", "comirec_sa.yaml", []),
    ("comirec_dr", "comirec_dr.yaml", []),
    ("mind", "mind.yaml", []),
    # torch-rechub's example size (the throughput target) is measured against torch-rechub
    # itself, in one run: benchmarks/rechub_throughput.py
]  # fmt: skip

HEADER = (
    "| row | model | mode | negatives | similarity | temperature | epochs (best) | s/epoch "
    "| train samples/s | train s | eval s | HR@10 | NDCG@10 | HR@50 | MRR@10 |\n"
    "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


def describe_negatives(config: Config) -> str:
    n = config.negatives
    if n.kind == "full":
        return "full softmax"
    logq = n.logq if n.logq is not None else config.train.mode.value == "listwise"
    if n.kind == "in_batch":
        return "in-batch" + (", log-q" if logq else "")
    text = f"{n.n} sampled" if n.kind == "sampled" else f"in-batch + {n.n}"
    text += f" ({n.sampler}{'^' + format(n.alpha, 'g') if n.sampler == 'popularity' else ''}"
    text += ", shared)" if n.shared else ")"
    return text + (", log-q" if logq else "")


def row_line(name: str, outcome: pipeline.RunOutcome) -> str:
    c, r, t = outcome.config, outcome.result, outcome.metrics["test"]
    similarity = c.similarity.name + (" (L2-normalised)" if c.similarity.normalize else "")
    temperature = f"{c.temperature.value:g}" + (" learned" if c.temperature.learnable else "")
    return (
        f"| {name} | {c.model.name} | {c.train.mode.value} | {describe_negatives(c)} | "
        f"{similarity} | {temperature} | {len(r.epochs)} ({r.best_epoch}) | "
        f"{r.seconds_per_epoch:.1f} | {r.samples_per_second:,.0f} | {r.train_seconds:.0f} | "
        f"{outcome.eval_seconds:.2f} | {t['hr@10']:.4f} | {t['ndcg@10']:.4f} | {t['hr@50']:.4f} | "
        f"{t['mrr@10']:.4f} |\n"
    )


def put_row(path: Path, line: str) -> None:
    """Replace the table row of the same name in ``path``, or add it after the table's last row
    (under the ``|---|`` line of a table without rows; text under the table stays under it)."""
    lines = path.read_text().rstrip("\n").split("\n")
    rows = [i for i, text in enumerate(lines) if text.startswith("|")]
    same = [i for i in rows if row_name(lines[i]) == row_name(line)]
    if same:
        lines[same[0]] = line.rstrip("\n")
    else:
        lines.insert(rows[-1] + 1 if rows else len(lines), line.rstrip("\n"))
    path.write_text("\n".join(lines) + "\n")


def row_name(row: str) -> str:
    return row.split("|")[1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="run rows containing this text")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--append",
        action="store_true",
        help="put rows into the existing table (same name: replaced)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    rows = [r for r in ROWS if not args.only or any(o in r[0] for o in args.only)]
    first = config_from_dict({"data": {"dataset": "ml-1m"}})
    prepared = pipeline.prepare(first.data, progress=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append:
        for name, config_file, overrides in rows:
            config = load_config(CONFIGS / config_file, [*overrides, "train.progress=false"])
            put_row(args.out, row_line(name, pipeline.train(config, prepared)))
        print(args.out.read_text())
        return
    with open(args.out, "w") as out:
        out.write(
            "# DSSM and YouTubeDNN on ML-1M\n\n"
            f"`python benchmarks/ml1m_matching.py` on {date.today()}: "
            f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. "
            "Protocol: DESIGN.md (leave-one-out, full catalogue, history masked, all 6,040 "
            "users); test metrics of the epoch with the best validation NDCG@10. "
            "`s/epoch` and `samples/s` cover training only; `eval s` is one exact evaluation "
            "of the 6,040 test users over all 3,706 items.\n\n"
        )
        out.write(HEADER)
        out.flush()
        popularity_written = False
        for name, config_file, overrides in rows:
            config = load_config(CONFIGS / config_file, [*overrides, "train.progress=false"])
            start = time.perf_counter()
            outcome = pipeline.train(config, prepared)
            logging.info("%s done in %.0f s", name, time.perf_counter() - start)
            if not popularity_written:
                p = outcome.popularity
                out.write(
                    f"| popularity | most popular unseen | - | - | - | - | - | - | - | - | - | "
                    f"{p['hr@10']:.4f} | {p['ndcg@10']:.4f} | {p['hr@50']:.4f} | "
                    f"{p['mrr@10']:.4f} |\n"
                )
                popularity_written = True
            out.write(row_line(name, outcome))
            out.flush()
    print(args.out.read_text())


if __name__ == "__main__":
    main()
