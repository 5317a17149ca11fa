"""Benchmark: one SASRec epoch on ML-1M, towerkit against RecBole, in one run.

The same model at the same size, read from ``configs/ml-1m/sasrec.yaml`` for both libraries
(causal Transformer, D=64, 2 blocks, 1 head, feed-forward 256, dropout 0.2), the last 50 items,
cross-entropy over the whole catalogue, the same 982,089 (prefix, next item) training pairs.
RecBole turns every prefix into its own sequence (its data augmentation) and runs one forward
pass per prefix; towerkit runs one pass per window of 50 positions and trains every position of
it. Both use two threads and Adam-family optimisers, batch sizes their own defaults (RecBole
2048 prefixes, towerkit 64 windows).

A RecBole epoch takes about half an hour here, so its epoch time is extrapolated from
``--batches`` timed batches (after 3 warm-up batches; data loading included, as in its trainer);
towerkit's epoch is timed whole. Only training is timed (no evaluation). The machine is shared
and noisy, so the two are measured in turn ``--repeats`` times and the table reports medians.

Run in an environment with RecBole (it is not a towerkit dependency; its ray import needs
``pkg_resources``, and it predates numpy 2):
    pip install recbole==1.2.1 "numpy<2" "pyarrow<18" "setuptools<70"
    python benchmarks/recbole_sasrec.py            # writes results/recbole_sasrec.md
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import torch

from towerkit import datasets
from towerkit.config import Config, SASRecConfig, load_config
from towerkit.runs import pipeline

RESULTS = Path(__file__).parent / "results" / "recbole_sasrec.md"
CONFIG = Path(__file__).parent.parent / "configs" / "ml-1m" / "sasrec.yaml"
MAX_LEN, THREADS = 50, 2


def ffn_dim(model: SASRecConfig) -> int:
    """The feed-forward width towerkit's SASRec uses (``4 * D`` unless set)."""
    return model.ffn_dim or 4 * model.embedding_dim


def write_atomic_file(directory: Path) -> None:
    """ML-1M from towerkit's verified cache as RecBole's ``ml-1m.inter`` (items as integers)."""
    frame = pd.read_parquet(datasets.cache_dir("ml-1m") / "interactions.parquet")
    frame["item"] = pd.factorize(frame["item"])[0] + 1
    frame = frame[["user", "item", "timestamp"]]
    frame.columns = ["user_id:token", "item_id:token", "timestamp:float"]
    (directory / "ml-1m").mkdir(parents=True)
    frame.to_csv(directory / "ml-1m" / "ml-1m.inter", sep="\t", index=False)


class RecBoleSASRec:
    """RecBole's SASRec at the size of towerkit's ``model`` config, its data (prefix
    augmentation done once) and optimiser."""

    def __init__(self, data_path: Path, model: SASRecConfig) -> None:
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.model.sequential_recommender import SASRec
        from recbole.utils import init_seed

        config = Config(
            model="SASRec",
            dataset="ml-1m",
            config_dict={
                "data_path": str(data_path),
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "MAX_ITEM_LIST_LENGTH": MAX_LEN,
                "hidden_size": model.embedding_dim,
                "inner_size": ffn_dim(model),
                "n_layers": model.n_layers,
                "n_heads": model.n_heads,
                "hidden_dropout_prob": model.dropout,
                "attn_dropout_prob": model.dropout,
                "loss_type": "CE",
                "train_neg_sample_args": None,
                "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
                "train_batch_size": 2048,
                "device": "cpu",
                "use_gpu": False,
                "worker": 0,
                "show_progress": False,
                "checkpoint_dir": str(data_path / "saved"),
            },
        )
        init_seed(config["seed"], config["reproducibility"])
        self.train_data, _, _ = data_preparation(config, create_dataset(config))
        self.model = SASRec(config, self.train_data._dataset)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["learning_rate"])
        self.n_batches = len(self.train_data)
        self.n_samples = len(self.train_data._dataset)

    def seconds_per_batch(self, n_batches: int) -> float:
        """Median seconds of a training batch (data loading included), after 3 warm-up ones."""
        torch.set_num_threads(THREADS)
        self.model.train()
        seconds = []
        batches = iter(self.train_data)
        for _ in range(3 + n_batches):
            start = time.perf_counter()
            interaction = next(batches)
            self.optimizer.zero_grad()
            self.model.calculate_loss(interaction).backward()
            self.optimizer.step()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds[3:])


def towerkit_epoch_seconds(config: Config, prepared: pipeline.Prepared) -> tuple[float, int]:
    """Training seconds of one towerkit SASRec epoch, and its samples."""
    epoch = pipeline.train(config, prepared).result.epochs[0]
    return epoch.seconds, round(epoch.samples_per_second * epoch.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="RecBole batches to time")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved measurements")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = load_config(
        CONFIG,
        [f"data.max_len={MAX_LEN}", "train.epochs=1", "train.progress=false",
         f"train.threads={THREADS}"],
    )  # fmt: skip
    prepared = pipeline.prepare(config.data, progress=False)  # fetches ML-1M if not cached

    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        write_atomic_file(Path(tmp))
        recbole_sasrec = RecBoleSASRec(Path(tmp), config.model)
        for _ in range(args.repeats):
            seconds, our_samples = towerkit_epoch_seconds(config, prepared)
            ours.append(seconds)
            logging.info("towerkit: %.1f s an epoch (%d samples)", seconds, our_samples)
            theirs.append(recbole_sasrec.seconds_per_batch(args.batches))
            logging.info("RecBole: %.2f s a batch", theirs[-1])
    n_batches, rb_samples = recbole_sasrec.n_batches, recbole_sasrec.n_samples
    per_batch, our_epoch = statistics.median(theirs), statistics.median(ours)
    their_epoch = per_batch * n_batches

    import recbole

    m = config.model
    RESULTS.write_text(
        "# One SASRec epoch on ML-1M: towerkit vs RecBole\n\n"
        f"`python benchmarks/recbole_sasrec.py --batches {args.batches} --repeats "
        f"{args.repeats}` (run {date.today()}: {platform.machine()}, {THREADS} threads, torch "
        f"{torch.__version__}, RecBole {recbole.__version__}). Same model and size: "
        f"D={m.embedding_dim}, {m.n_layers} blocks, {m.n_heads} head(s), feed-forward "
        f"{ffn_dim(m)}, dropout {m.dropout}, last {MAX_LEN} items, full-catalogue "
        "cross-entropy. Training time only; the two are measured in turn, medians of "
        f"{args.repeats}.\n\n"
        "| library | training samples an epoch | forward passes | s/epoch | speed-up |\n"
        "|---|---:|---|---:|---:|\n"
        f"| RecBole SASRec | {rb_samples:,} | one per prefix, batch 2048 | {their_epoch:,.0f} "
        f"({per_batch:.2f} s x {n_batches} batches; "
        f"{', '.join(f'{t:.2f}' for t in theirs)} s) | 1.0x |\n"
        f"| towerkit SASRec | {our_samples:,} | one per window of {MAX_LEN}, batch 64 windows "
        f"| {our_epoch:.1f} ({', '.join(f'{t:.1f}' for t in ours)}) | "
        f"{their_epoch / our_epoch:.0f}x |\n"
    )
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
