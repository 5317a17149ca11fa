"""The Trainer: temperature really applied, seeded determinism, early stopping on NDCG@10,
and end-to-end runs that must beat the popularity baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from towerkit.config import config_from_dict
from towerkit.data import Interactions, Sequences, TrainingBatches, encode, leave_one_out
from towerkit.models import YouTubeDNN
from towerkit.negatives import FullNegatives
from towerkit.objectives import listwise
from towerkit.similarity import Cosine, Temperature
from towerkit.training import Trainer, TrainSettings, _lr_lambda


def synthetic_split(seed: int = 0, n_users: int = 60, n_items: int = 30, length: int = 12):
    """Users walk a cycle over the items: item i is followed by item i + 1."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = rng.integers(0, n_items)
        rows += [(u, (start + t) % n_items, t) for t in range(length)]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    enc = encode(Interactions(frame))
    return enc, leave_one_out(Sequences.from_encoded(enc))


def trainer(n_items: int, temperature: float = 0.1, seed: int = 0, epochs: int = 2, **kwargs):
    torch.manual_seed(seed)
    model = YouTubeDNN(n_items, embedding_dim=16, hidden=(32,), max_len=5, pooling="recency")
    return Trainer(
        model,
        objective=listwise,
        negatives=FullNegatives(n_items),
        similarity=Cosine(),
        temperature=Temperature(temperature),
        settings=TrainSettings(epochs=epochs, seed=seed, progress=False, lr=5e-3, **kwargs),
    )


def test_temperature_is_applied():
    """The pitfall: a temperature argument that is stored and never used."""
    enc, split = synthetic_split()
    batch = next(iter(TrainingBatches(split, batch_size=32, max_len=5, shuffle=False)))
    hot, cold = trainer(enc.n_items, 1.0), trainer(enc.n_items, 0.05)
    hot.model.eval(), cold.model.eval()
    assert not torch.isclose(hot.step_loss(batch), cold.step_loss(batch))


def test_seeded_training_is_deterministic():
    enc, split = synthetic_split()
    weights = []
    for seed in (3, 3, 4):
        t = trainer(enc.n_items, seed=seed)
        t.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=seed))
        weights.append(t.model.item_embedding.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


class ScriptedEvaluator:
    """Returns a fixed sequence of validation NDCG@10 values."""

    def __init__(self, values):
        self.values, self.calls, self.last_seconds = list(values), 0, 0.0
        self.snapshots = []

    def evaluate(self, model, similarity, device):
        self.snapshots.append(model.item_embedding.weight.detach().clone())
        value = self.values[self.calls]
        self.calls += 1
        return {"hr@10": value, "ndcg@10": value}


def test_early_stopping_keeps_the_best_weights():
    enc, split = synthetic_split()
    t = trainer(enc.n_items, epochs=10, patience=2)
    evaluator = ScriptedEvaluator([0.1, 0.3, 0.2, 0.25, 0.9])
    result = t.fit(TrainingBatches(split, batch_size=16, max_len=5), evaluator)
    assert evaluator.calls == 4  # epochs 3 and 4 did not beat epoch 2: stop
    assert result.best_epoch == 2 and result.best_valid["ndcg@10"] == 0.3
    assert torch.equal(t.model.item_embedding.weight, evaluator.snapshots[1])


def test_schedules():
    cosine = _lr_lambda("cosine", warmup=2, total=10)
    assert cosine(0) == 0.5 and cosine(1) == 1.0 and cosine(2) == 1.0
    assert cosine(10) == pytest.approx(0.0) and cosine(6) == pytest.approx(0.5)
    assert _lr_lambda("linear", 0, 10)(5) == 0.5
    with pytest.raises(ValueError, match="unknown schedule"):
        _lr_lambda("step", 0, 10)


def test_learns_the_synthetic_cycle():
    """Item i is always followed by i + 1: a trained model must find it."""
    from towerkit.evaluation import Evaluator

    enc, split = synthetic_split()
    t = trainer(enc.n_items, epochs=15)
    valid = Evaluator(split, "valid", enc.n_items, ks=(1, 10), max_len=5)
    result = t.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=0), valid)
    test = Evaluator(split, "test", enc.n_items, ks=(1, 10), max_len=5)
    metrics = test.evaluate(t.model, Cosine())
    assert metrics["hr@1"] > 0.8, (metrics, result.best_valid)
    assert test.evaluate_popularity()["hr@1"] < 0.2


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize(
    ("mode", "negatives", "similarity"),
    [
        ("listwise", "full", "cosine"),
        ("pointwise", "sampled", "cosine"),
        ("pairwise", "sampled", "cosine"),
        ("listwise", "in_batch", "dot"),
        ("listwise", "mixed", "euclidean"),
    ],
)
def test_end_to_end_on_ml100k_beats_popularity(mode, negatives, similarity):
    from towerkit import pipeline

    config = config_from_dict(
        {
            "data": {"dataset": "ml-100k", "max_len": 20},
            "model": {"embedding_dim": 32, "hidden": [64], "pooling": "recency"},
            "similarity": {"name": similarity, "normalize": similarity == "euclidean"},
            "temperature": {"value": 0.1 if similarity != "dot" else 1.0},
            "negatives": {"kind": negatives, "n": 32},
            "train": {
                "mode": mode, "epochs": 5, "batch_size": 256, "lr": 0.003, "progress": False
            },
        }
    )  # fmt: skip
    outcome = pipeline.train(config)
    test, pop = outcome.metrics["test"], outcome.popularity
    assert test["ndcg@10"] > 1.5 * pop["ndcg@10"], (test, pop)
    assert test["hr@10"] > 1.5 * pop["hr@10"], (test, pop)
