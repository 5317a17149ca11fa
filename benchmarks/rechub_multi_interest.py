"""Benchmark: torch-rechub 0.9's own MIND and ComiRec-SA beside towerkit's, on ML-1M, all
ranked by towerkit's evaluator.

torch-rechub's models train as its ML-1M examples set them up (``examples/matching/
run_ml_mind.py``, ``run_ml_comirec.py``): 16-d embeddings, the user profile (id, gender, age,
occupation, zip) beside the history of 50, K = 4, user and item vectors L2-normalised,
temperature 0.02, 3 popularity-weighted negatives per sample drawn once before training,
list-wise softmax, Adam at lr 1e-3 with weight decay 1e-6, batch 256, through its own
``MatchTrainer``. towerkit's rows train its own MIND and ComiRec-SA at the same size and with
the same objective (16-d, K = 4, cosine at 0.02, 3 popularity negatives, lr 1e-3, weight decay
1e-6, batch 256, a constant rate) but without the profile (its multi-interest towers read
histories only), and then with its shipped configs (``configs/ml-1m/mind.yaml``,
``comirec_sa.yaml``: 64-d, the exact softmax).

Every row trains on the same 988,129 samples (every training position of towerkit's ML-1M
split) and is scored after every epoch by the same evaluator under DESIGN.md's protocol
(leave-one-out, all items ranked, seen items masked; a user ranked by their best interest);
the table gives test metrics at the epoch of best validation NDCG@10, and training seconds per
epoch (one run, rows in turn, 2 threads).

Run (needs ``pip install torch-rechub==0.9.0 scikit-learn``):
    python benchmarks/rechub_multi_interest.py             # results/rechub_multi_interest.md
    python benchmarks/rechub_multi_interest.py --epochs 1 --set data.dataset=ml-100k  # a look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch

from towerkit.config import load_config
from towerkit.evaluation import Evaluator
from towerkit.runs import pipeline
from towerkit.similarity import Cosine
from towerkit.task.negatives import CatalogueSampler

sys.path.insert(0, str(Path(__file__).parent))
from ml1m_sequential import Timeline, train_row
from rechub_throughput import require_rechub, samples

RESULTS = Path(__file__).parent / "results" / "rechub_multi_interest.md"
CONFIGS = Path(__file__).parent.parent / "configs" / "ml-1m"
DIM, MAX_LEN, N_NEG, INTERESTS, TEMPERATURE, BATCH, LR, WD = 16, 50, 3, 4, 0.02, 256, 1e-3, 1e-6
PROFILE = ["gender", "age", "occupation", "zip"]
COMMON = ["data.user_features=[]", "data.item_features=[]", "train.progress=false"]
SAME_SIZE = [
    f"model.embedding_dim={DIM}", f"model.interests={INTERESTS}", f"data.max_len={MAX_LEN}",
    "similarity.name=cosine", f"temperature.value={TEMPERATURE}", "negatives.kind=sampled",
    f"negatives.n={N_NEG}", "negatives.sampler=popularity", "negatives.alpha=1.0",
    f"train.lr={LR}", f"train.weight_decay={WD}", f"train.batch_size={BATCH}",
    "train.schedule=constant", "train.patience=0",
]  # fmt: skip

logger = logging.getLogger("rechub_multi_interest")


class RecHubTowers(torch.nn.Module):
    """A torch-rechub matching model behind towerkit's tower contract, for the evaluator:
    ``encode_users`` builds torch-rechub's input dict from a towerkit batch."""

    def __init__(self, model: torch.nn.Module, profile: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.model, self.profile = model, profile
        self.embedding_dim = DIM

    def _as(self, mode: str, x: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.mode = mode
        try:
            return self.model(x)
        finally:
            self.model.mode = None

    def encode_users(self, batch) -> torch.Tensor:
        users = batch.users.numpy()
        x = {"user_id": batch.users, "hist_movie_id": batch.history[:, -MAX_LEN:]}
        x.update({name: torch.from_numpy(values[users]) for name, values in self.profile.items()})
        return self._as("user", x)  # (B, K, D)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self._as("item", {"movie_id": item_ids})


def rechub_row(name: str, prepared, data, valid: Evaluator, test: Evaluator, epochs: int):
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.matching import MIND, ComirecSA
    from torch_rechub.trainers import MatchTrainer
    from torch_rechub.utils.data import MatchDataGenerator

    encoded = prepared.encoded
    n_items, users = encoded.n_items, data["users"]
    table = encoded.user_features.values
    profile = {name: np.asarray(table[name]).astype(np.int64) for name in PROFILE}
    x = {"user_id": users, **{name: values[users] for name, values in profile.items()}}
    x["hist_movie_id"], x["movie_id"] = data["history"], data["targets"]
    sampler = CatalogueSampler.popularity(prepared.train_counts, alpha=1.0)
    x["neg_items"] = sampler.sample((len(users), N_NEG), torch.Generator().manual_seed(0)).numpy()
    vocab = {"user_id": encoded.n_users + 1}
    vocab.update({name: int(values.max()) + 1 for name, values in profile.items()})
    user_features = [SparseFeature(n, vocab_size=v, embed_dim=DIM) for n, v in vocab.items()]
    history = [SequenceFeature("hist_movie_id", n_items + 1, DIM, pooling="concat",
                               shared_with="movie_id")]  # fmt: skip
    item_features = [SparseFeature("movie_id", vocab_size=n_items + 1, embed_dim=DIM)]
    negatives = [SequenceFeature("neg_items", n_items + 1, DIM, pooling="concat",
                                 shared_with="movie_id")]  # fmt: skip
    torch.manual_seed(0)
    if name == "mind":
        model = MIND(user_features, history, item_features, negatives, max_length=MAX_LEN,
                     temperature=TEMPERATURE, interest_num=INTERESTS)  # fmt: skip
    else:
        model = ComirecSA(user_features, history, item_features, negatives,
                          temperature=TEMPERATURE, interest_num=INTERESTS)  # fmt: skip
    y = np.zeros(len(users), dtype=np.int64)  # list-wise: the positive is logit 0
    loader = MatchDataGenerator(x, y).generate_dataloader(x, x, BATCH, num_workers=0)[0]
    towers = RecHubTowers(model, profile)
    timeline = Timeline(valid, test)  # validation and test after every epoch, as for towerkit's
    with tempfile.TemporaryDirectory() as out:
        trainer = MatchTrainer(model, mode=2, optimizer_params={"lr": LR, "weight_decay": WD},
                               n_epoch=epochs, device="cpu", model_path=out)  # fmt: skip
        for epoch in range(epochs):
            trainer.train_one_epoch(loader, log_interval=10**9)
            timeline.evaluate(towers, Cosine())
            logger.info("torch-rechub %s epoch %d: %s", name, epoch + 1, timeline.points[-1])
    return timeline.points


def towerkit_row(config_file: str, overrides: list[str], prepared, epochs: int) -> list[dict]:
    config = load_config(CONFIGS / config_file, [*COMMON, *overrides, f"train.epochs={epochs}"])
    return train_row(config, prepared)[1].points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the same-size rows")
    parser.add_argument("--only", nargs="*", default=None, help="rows whose name has the text")
    parser.add_argument(
        "--set", nargs="*", default=[], help="overrides for every towerkit config (data.*)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    require_rechub()

    base = load_config(CONFIGS / "mind.yaml", [*COMMON, *args.set, f"data.user_features={PROFILE}"])
    prepared = pipeline.prepare(base.data, progress=False)
    data = samples(prepared)
    ks = (10, 50)
    valid = Evaluator(prepared.split, "valid", prepared.encoded.n_items, ks=ks, max_len=MAX_LEN)
    test = Evaluator(prepared.split, "test", prepared.encoded.n_items, ks=ks, max_len=MAX_LEN)
    e, sets = args.epochs, args.set
    same_size_sa = [*sets, *SAME_SIZE, "model.attention_dim=64"]
    rows = {
        "torch-rechub 0.9 MIND": lambda: rechub_row("mind", prepared, data, valid, test, e),
        "torch-rechub 0.9 ComiRec-SA": lambda: rechub_row("sa", prepared, data, valid, test, e),
        "towerkit MIND, same size": lambda: towerkit_row(
            "mind.yaml", [*sets, *SAME_SIZE], prepared, e),
        "towerkit ComiRec-SA, same size": lambda: towerkit_row(
            "comirec_sa.yaml", same_size_sa, prepared, e),
        "towerkit MIND, shipped config": lambda: towerkit_row(
            "mind.yaml", sets, prepared, 4),
        "towerkit ComiRec-SA, shipped config": lambda: towerkit_row(
            "comirec_sa.yaml", sets, prepared, 4),
    }  # fmt: skip
    lines = []
    for name, run in rows.items():
        if args.only and not any(o in name for o in args.only):
            continue
        points = run()
        best = max(range(len(points)), key=lambda i: points[i]["valid"]["ndcg@10"])
        t = points[best]["test"]
        per_epoch = points[-1]["train_s"] / len(points)  # train_s: training seconds so far
        lines.append(
            f"| {name} | {len(points)} ({best + 1}) | {per_epoch:.1f} | {t['hr@10']:.4f} | "
            f"{t['ndcg@10']:.4f} | {t['hr@50']:.4f} |"
        )
        logger.info(lines[-1])
        slug = name.lower().replace(" ", "-").replace(",", "").replace(".", "")
        log = args.out.with_name(f"rechub_multi_interest.{slug}.json")
        log.write_text(json.dumps(points, indent=1) + "\n")
    command = " ".join(["--epochs", str(args.epochs), *(["--set", *sets] if sets else [])])
    text = (
        f"# MIND and ComiRec-SA on {base.data.dataset}: torch-rechub 0.9 against towerkit, "
        "one evaluator\n\n"
        f"`python benchmarks/rechub_multi_interest.py {command}` on {date.today()}: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 2 threads. "
        f"DESIGN.md's protocol (leave-one-out, all {prepared.encoded.n_items:,} items, seen "
        "items masked); test "
        "metrics at the epoch of best validation NDCG@10; training seconds only. Settings in "
        "the script's docstring.\n\n"
        "| row | epochs (best) | s/epoch | HR@10 | NDCG@10 | HR@50 |\n"
        "|---|---|---:|---:|---:|---:|\n" + "\n".join(lines) + "\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
