"""Benchmark: one YouTubeDNN epoch on ML-1M, towerkit against torch-rechub, in one run.

Like for like at torch-rechub's own YouTubeDNN example size: 16-d embeddings, user MLP
128-64-16 with ReLU, history of 50 mean-pooled, user profile features, 3 popularity negatives
per sample, list-wise softmax, batch 2048, one thread. Both libraries train on the same
988,129 samples (every training position of towerkit's ML-1M split). torch-rechub's trainer
runs its own loop on its own DataLoader (``num_workers=0``: one process, like towerkit); its
negatives are drawn before the epoch, as its example does, and that draw is not timed.

Only training time is compared (no evaluation). The machine is shared and noisy, so the rows
are measured in one run, interleaved, ``--repeats`` times, and the table reports each row's
median seconds and its speed-up over torch-rechub's median.

Run (needs ``pip install torch-rechub scikit-learn``; scikit-learn is imported by it):
    python benchmarks/rechub_throughput.py            # writes results/rechub_throughput.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from towerkit.config import load_config
from towerkit.data.batches import TrainingBatches
from towerkit.runs import pipeline
from towerkit.task.negatives import CatalogueSampler

RESULTS = Path(__file__).parent / "results" / "rechub_throughput.md"
CONFIG = Path(__file__).parent.parent / "configs" / "ml-1m" / "youtube_dnn.yaml"
BATCH, DIM, N_NEG, MAX_LEN = 2048, 16, 3, 50
PROFILE = ["gender", "age", "occupation", "zip"]

# towerkit at the same size; windows=50: each user's positions in windows of 50 targets, the
# history pooled by sliding sums (each item embedded once per window, not once per sample).
TOWERKIT = [
    "model.embedding_dim=16", "model.hidden=[128, 64]", "model.activation=relu",
    "model.pooling=mean", "model.recent_items=0", "model.dropout=0.0",
    f"data.user_features={PROFILE}", "data.max_len=50",
    "negatives.kind=sampled", "negatives.n=3", "negatives.sampler=popularity",
    "negatives.alpha=1.0", "train.batch_size=2048", "train.epochs=1", "train.threads=1",
    "train.progress=false",
]  # fmt: skip
ROWS = {
    "towerkit (per-sample batches)": TOWERKIT,
    "towerkit (windows of 50 positions)": [*TOWERKIT, "train.windows=50"],
}

logger = logging.getLogger("rechub_throughput")


def require_rechub() -> None:
    """Stop with the install command when torch-rechub is missing."""
    try:
        import torch_rechub  # noqa: F401
    except ImportError as err:
        message = "torch-rechub is not installed: pip install torch-rechub==0.9.0 scikit-learn"
        raise SystemExit(message) from err


def samples(prepared: pipeline.Prepared) -> dict[str, np.ndarray]:
    """Every training sample of the split, in order: user, history [N, 50], target."""
    batches = TrainingBatches(prepared.split, batch_size=1 << 20, max_len=MAX_LEN, shuffle=False)
    parts = [(b.users.numpy(), b.history.numpy(), b.targets.numpy()) for b in batches.epoch(0)]
    users, history, targets = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {"users": users, "history": history, "targets": targets}


def rechub_epoch(prepared: pipeline.Prepared, data: dict[str, np.ndarray]) -> float:
    """Seconds of one torch-rechub ``MatchTrainer.train_one_epoch`` on the same samples."""
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.matching import YoutubeDNN
    from torch_rechub.trainers import MatchTrainer
    from torch_rechub.utils.data import MatchDataGenerator

    encoded = prepared.encoded
    n_items, users = encoded.n_items, data["users"]
    table = encoded.user_features.values
    x = {"user_id": users}
    x.update({name: np.asarray(table[name])[users] for name in PROFILE})
    x["hist_movie_id"], x["movie_id"] = data["history"], data["targets"]
    sampler = CatalogueSampler.popularity(prepared.train_counts, alpha=1.0)
    generator = torch.Generator().manual_seed(0)
    x["neg_items"] = sampler.sample((len(users), N_NEG), generator).numpy()
    vocab = {name: int(np.asarray(table[name]).max()) + 1 for name in PROFILE}
    vocab["user_id"] = int(users.max()) + 1
    # As in torch-rechub's examples/matching/run_ml_youtube_dnn.py.
    user_features = [SparseFeature(n, vocab_size=vocab[n], embed_dim=DIM) for n in vocab]
    user_features += [
        SequenceFeature("hist_movie_id", n_items + 1, DIM, pooling="mean", shared_with="movie_id")
    ]
    item_features = [SparseFeature("movie_id", vocab_size=n_items + 1, embed_dim=DIM)]
    neg_features = [
        SequenceFeature("neg_items", n_items + 1, DIM, pooling="concat", shared_with="movie_id")
    ]
    torch.manual_seed(0)
    model = YoutubeDNN(
        user_features, item_features, neg_features, {"dims": [128, 64, 16]}, temperature=0.02
    )
    y = np.zeros(len(users), dtype=np.int64)  # list-wise: the positive is logit 0
    loader = MatchDataGenerator(x, y).generate_dataloader(x, x, BATCH, num_workers=0)[0]
    with tempfile.TemporaryDirectory() as out:
        trainer = MatchTrainer(
            model,
            mode=2,
            optimizer_params={"lr": 1e-4, "weight_decay": 1e-6},
            n_epoch=1,
            device="cpu",
            model_path=out,
        )
        start = time.perf_counter()
        trainer.train_one_epoch(loader)
        took = time.perf_counter() - start
    logger.info("torch-rechub: %.1f s", took)
    return took


def towerkit_epoch(prepared: pipeline.Prepared, overrides: list[str]) -> float:
    """Seconds of one towerkit training epoch (``pipeline.train``'s own timing)."""
    outcome = pipeline.train(load_config(CONFIG, overrides), prepared)
    return outcome.result.epochs[0].seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    require_rechub()

    prepared = pipeline.prepare(load_config(CONFIG, TOWERKIT).data, progress=False)
    data = samples(prepared)
    logger.info("%d training samples", len(data["users"]))
    seconds: dict[str, list[float]] = {"torch-rechub 0.9 (MatchTrainer)": []}
    seconds.update({name: [] for name in ROWS})
    for repeat in range(args.repeats):
        seconds["torch-rechub 0.9 (MatchTrainer)"].append(rechub_epoch(prepared, data))
        for name, overrides in ROWS.items():
            seconds[name].append(towerkit_epoch(prepared, overrides))
        logger.info("repeat %d: %s", repeat + 1, {k: round(v[-1], 2) for k, v in seconds.items()})

    n = len(data["users"])
    base = statistics.median(seconds["torch-rechub 0.9 (MatchTrainer)"])
    lines = [
        "# One YouTubeDNN epoch on ML-1M: towerkit against torch-rechub\n",
        f"`python benchmarks/rechub_throughput.py --repeats {args.repeats}` on {date.today()}: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, one thread. "
        f"{n:,} training samples, batch {BATCH}, 16-d, user MLP 128-64-16 (ReLU), history 50 "
        "mean-pooled, user profile, 3 popularity negatives, list-wise softmax. Training time "
        "only; rows interleaved in one run; median of the repeats.\n",
        "| row | s/epoch (median) | each repeat | samples/s | speed-up |",
        "|---|---:|---|---:|---:|",
    ]
    for name, values in seconds.items():
        median = statistics.median(values)
        each = ", ".join(f"{v:.1f}" for v in values)
        speed = f"{n / median:,.0f} | {base / median:.1f}x"
        lines.append(f"| {name} | {median:.2f} | {each} | {speed} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
