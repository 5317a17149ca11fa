"""The Trainer: temperature really applied, seeded determinism, early stopping on the monitored
metric, checkpoints that resume bit-identically, and end-to-end runs that must beat the
popularity baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import small_config
from towerkit.config import TrainConfig, config_from_dict
from towerkit.data import Interactions, Sequences, TrainingBatches, encode, leave_one_out
from towerkit.evaluation import Evaluator
from towerkit.models import YouTubeDNN
from towerkit.nn import PooledTowerOptions
from towerkit.runs import RunDir, pipeline
from towerkit.similarity import Cosine
from towerkit.task import RetrievalTask
from towerkit.task.negatives import FullNegatives
from towerkit.training import Optimizer, Trainer, TrainingError
from towerkit.training.trainer import _lr_lambda


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
    model = YouTubeDNN(n_items, embedding_dim=16, max_len=5, tower=PooledTowerOptions(hidden=(32,)))
    task = RetrievalTask(model.encode_items, negatives=FullNegatives(n_items),
                         similarity=Cosine(), temperature=temperature)  # fmt: skip
    config = TrainConfig(epochs=epochs, seed=seed, progress=False, lr=5e-3, **kwargs)
    return Trainer(model, task, config)


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
    """Returns a fixed sequence of validation metrics."""

    def __init__(self, ndcg, hr=None):
        self.ndcg, self.hr = list(ndcg), list(hr or ndcg)
        self.calls, self.last_seconds, self.snapshots = 0, 0.0, []

    def evaluate(self, model, similarity, device):
        self.snapshots.append(model.item_embedding.weight.detach().clone())
        values = {"hr@10": self.hr[self.calls], "ndcg@10": self.ndcg[self.calls]}
        self.calls += 1
        return values


def test_early_stopping_keeps_the_best_weights():
    enc, split = synthetic_split()
    t = trainer(enc.n_items, epochs=10, patience=2)
    evaluator = ScriptedEvaluator([0.1, 0.3, 0.2, 0.25, 0.9])
    result = t.fit(TrainingBatches(split, batch_size=16, max_len=5), evaluator)
    assert evaluator.calls == 4  # epochs 3 and 4 did not beat epoch 2: stop
    assert result.best_epoch == 2 and result.best_valid["ndcg@10"] == 0.3
    assert torch.equal(t.model.item_embedding.weight, evaluator.snapshots[1])


def test_the_monitor_picks_the_best_epoch():
    enc, split = synthetic_split()
    batches = TrainingBatches(split, batch_size=16, max_len=5)
    scripted = {"ndcg": [0.1, 0.3, 0.2], "hr": [0.5, 0.4, 0.6]}
    by_ndcg = trainer(enc.n_items, epochs=3, patience=0).fit(batches, ScriptedEvaluator(**scripted))
    by_hr = trainer(enc.n_items, epochs=3, patience=0, monitor="hr@10").fit(
        batches, ScriptedEvaluator(**scripted)
    )
    assert (by_ndcg.best_epoch, by_hr.best_epoch) == (2, 3)


def test_schedules():
    cosine = _lr_lambda("cosine", warmup=2, total=10)
    assert cosine(0) == 0.5 and cosine(1) == 1.0 and cosine(2) == 1.0
    assert cosine(10) == pytest.approx(0.0) and cosine(6) == pytest.approx(0.5)
    assert _lr_lambda("linear", 0, 10)(5) == 0.5
    with pytest.raises(ValueError, match="unknown schedule"):
        _lr_lambda("step", 0, 10)


def test_learns_the_synthetic_cycle():
    """Item i is always followed by i + 1: a trained model must find it."""
    enc, split = synthetic_split()
    t = trainer(enc.n_items, epochs=15)
    valid = Evaluator(split, "valid", enc.n_items, ks=(1, 10), max_len=5)
    result = t.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=0), valid)
    test = Evaluator(split, "test", enc.n_items, ks=(1, 10), max_len=5)
    metrics = test.evaluate(t.model, Cosine())
    assert metrics["hr@1"] > 0.8, (metrics, result.best_valid)
    assert test.evaluate_popularity()["hr@1"] < 0.2


def test_a_non_finite_loss_stops_training_with_the_epoch_and_step():
    enc, split = synthetic_split()
    t = trainer(enc.n_items)
    with torch.no_grad():
        t.model.item_embedding.weight[5] = float("nan")
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, step 1"):
        t.fit(TrainingBatches(split, batch_size=16, max_len=5))


# --------------------------------------------------------------------------------------------
# Checkpoints and resume
# --------------------------------------------------------------------------------------------

RESUME_CASES = {
    "youtube_dnn-full": {},
    "youtube_dnn-sampled": {"negatives": {"kind": "sampled", "n": 8, "sampler": "popularity"}},
    "sasrec-full": {"model": {"name": "sasrec", "embedding_dim": 16}},
    # with the time bias: the windows carry times, and the stored user vectors read them
    "hstu-full": {"model": {"name": "hstu", "embedding_dim": 16, "n_heads": 2, "time_bias": True}},
    "sasrec-sampled": {
        "model": {"name": "sasrec", "embedding_dim": 16},
        "negatives": {"kind": "sampled", "n": 8, "sampler": "popularity"},
    },
    # a learned temperature, a decaying schedule and mixed negatives carry state of their own
    "youtube_dnn-mixed-learned": {
        "negatives": {"kind": "mixed", "n": 8},
        "temperature": {"learnable": True},
        "train": {"schedule": "cosine", "warmup": 3},
    },
    # sparse id tables: SparseAdam's state and its own schedule beside AdamW's
    "sasrec-mixed-sparse": {
        "model": {"name": "sasrec", "embedding_dim": 16},
        "negatives": {"kind": "mixed", "n": 8},
        "train": {"sparse": True, "schedule": "cosine"},
    },
}


class Stop(Exception):
    """Raised by a test to stop training at a chosen point."""


def stop_after_checkpoint(monkeypatch, epoch: int) -> None:
    """Make the run stop right after writing the checkpoint of ``epoch``."""
    save = RunDir.save_checkpoint

    def save_then_stop(self, state):
        save(self, state)
        if state.epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", save_then_stop)


def stop_during_epoch(monkeypatch, epoch: int, step: int) -> None:
    """Make the run crash at ``step`` of ``epoch`` (1-based), mid-epoch."""
    real = Trainer.step_loss
    seen = {"epoch": 0, "step": 0}

    def step_loss(self, batch):
        seen["step"] += 1
        if seen["step"] == step and self.model.training and seen.get("done") == epoch - 1:
            raise Stop
        return real(self, batch)

    real_epoch = Trainer._train_epoch

    def train_epoch(self, batches, index, *args):
        seen["done"], seen["step"] = index, 0
        return real_epoch(self, batches, index, *args)

    monkeypatch.setattr(Trainer, "step_loss", step_loss)
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def run_files(path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in
            ("metrics.json", "items.parquet", "users.parquet", "model.pt")}  # fmt: skip


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_stop_and_resume_is_bit_identical(case, walk_prepared, tmp_path, monkeypatch):
    sections = RESUME_CASES[case]
    train = {"epochs": 4, "patience": 0, **sections.get("train", {})}
    config = small_config(**{**sections, "train": train})
    straight = pipeline.train(config, walk_prepared, run=tmp_path / "straight")
    assert len(straight.result.epochs) == 4

    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, epoch=2)
        with pytest.raises(KeyboardInterrupt):
            pipeline.train(config, walk_prepared, run=tmp_path / "stopped")
    run = RunDir(tmp_path / "stopped")
    assert run.status == "training" and run.epochs_done == 2
    assert not (run.path / "metrics.json").exists()
    resumed = pipeline.resume(run, walk_prepared)
    assert run.finished and [e.epoch for e in resumed.result.epochs] == [1, 2, 3, 4]
    assert run_files(run.path) == run_files(tmp_path / "straight")
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run.path / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_mid_epoch_resumes_from_the_last_epoch(walk_prepared, tmp_path, monkeypatch):
    config = small_config(train={"epochs": 4, "patience": 0})
    pipeline.train(config, walk_prepared, run=tmp_path / "straight")
    with monkeypatch.context() as patch:
        stop_during_epoch(patch, epoch=3, step=2)
        with pytest.raises(Stop):
            pipeline.train(config, walk_prepared, run=tmp_path / "killed")
    run = RunDir(tmp_path / "killed")
    assert run.epochs_done == 2 and not run.finished
    assert not list(run.path.glob(".*part"))  # no temporary file left behind
    pipeline.resume(run, walk_prepared)
    assert run_files(run.path) == run_files(tmp_path / "straight")


def test_resume_refuses_other_data_and_finished_runs(walk_prepared, tmp_path, monkeypatch):
    from conftest import prepare_log, walk_log
    from towerkit.runs import RunDirError

    config = small_config(train={"epochs": 2})
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, epoch=1)
        with pytest.raises(KeyboardInterrupt):
            pipeline.train(config, walk_prepared, run=tmp_path / "run")
    other = prepare_log(walk_log(np.full(120, 20), 60, seed=5))
    with pytest.raises(RunDirError, match="differ from the data the run was trained on"):
        pipeline.resume(tmp_path / "run", other)
    pipeline.resume(tmp_path / "run", walk_prepared)
    with pytest.raises(RunDirError, match="finished already"):
        pipeline.resume(tmp_path / "run", walk_prepared)


def test_early_stopping_survives_a_resume(walk_prepared, tmp_path, monkeypatch):
    """Patience counted before the stop still counts after it."""
    config = small_config(train={"epochs": 12, "patience": 1, "lr": 0.05})
    straight = pipeline.train(config, walk_prepared, run=tmp_path / "straight")
    stopped_at = len(straight.result.epochs)
    assert stopped_at < 12, "the case must stop early to test anything"
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, epoch=stopped_at - 1)
        with pytest.raises(KeyboardInterrupt):
            pipeline.train(config, walk_prepared, run=tmp_path / "stopped")
    resumed = pipeline.resume(tmp_path / "stopped", walk_prepared)
    assert len(resumed.result.epochs) == stopped_at
    stopped = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert stopped == json.loads((tmp_path / "straight" / "metrics.json").read_text())


def test_checkpoints_load_safely_and_timings_stay_out_of_metrics(walk_prepared, tmp_path):
    run = pipeline.train(small_config(), walk_prepared, run=tmp_path / "run").run
    state = run.load_checkpoint()  # torch.load(weights_only=True) inside
    assert state.epoch == 3 and len(state.logs) == 3 and state.best_weights is not None
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert "seconds" not in json.dumps(metrics)
    timing = json.loads((run.path / "timing.json").read_text())
    assert [e["epoch"] for e in timing["epochs"]] == [1, 2, 3]
    assert all(e["seconds"] > 0 for e in timing["epochs"])


@pytest.mark.slow
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
def test_end_to_end_beats_popularity(mode, negatives, similarity, walk_prepared):
    """Every mode and strategy learns the walks far better than popularity."""
    negative_section = {"kind": negatives}
    if negatives in ("sampled", "mixed"):
        negative_section["n"] = 16
    config = config_from_dict({
        "data": {"dataset": "ml-100k", "max_len": 10},
        "model": {"embedding_dim": 16, "hidden": [32]},
        "similarity": {"name": similarity, "normalize": similarity == "euclidean"},
        "temperature": {"value": 0.1 if similarity != "dot" else 1.0},
        "negatives": negative_section,
        "train": {"mode": mode, "epochs": 8, "batch_size": 64, "lr": 0.01, "progress": False},
    })  # fmt: skip
    outcome = pipeline.train(config, walk_prepared)
    test, pop = outcome.metrics["test"], outcome.popularity
    assert test["ndcg@10"] > 2 * pop["ndcg@10"], (test, pop)
    assert test["hr@10"] > 2 * pop["hr@10"], (test, pop)


# --------------------------------------------------------------------------------------------
# Sparse id tables (train.sparse): a step reads and writes only the rows it touched
# --------------------------------------------------------------------------------------------


def test_a_sparse_step_updates_only_the_rows_it_touched(walk_prepared):
    config = small_config(negatives={"kind": "in_batch"}, train={"sparse": True})
    torch.manual_seed(0)
    model = pipeline.build_model(config, walk_prepared)
    task = pipeline.build_task(config, model, walk_prepared)
    t = Trainer(model, task, config.train)
    tables = t.sparse
    assert any(w is model.item_embedding.weight for w in tables)
    dense = [p for p in model.parameters() if all(p is not w for w in tables)]
    optimizer = Optimizer(dense, tables, config.train, total_steps=10)
    batches = TrainingBatches(walk_prepared.split, batch_size=8, max_len=10, seed=0)
    first, second = batches.make_batch(np.arange(8)), batches.make_batch(np.arange(8, 16))
    for batch in (first, second):
        before = model.item_embedding.weight.detach().clone()
        optimizer.zero_grad()
        t.step_loss(batch).backward()
        assert model.item_embedding.weight.grad.is_sparse
        optimizer.step()
    # The item table is read for the batch's targets only (in-batch candidates are targets);
    # Adam's momentum would move the first batch's rows again, SparseAdam leaves them.
    changed = (model.item_embedding.weight.detach() != before).any(1).nonzero().ravel()
    assert changed.tolist() == sorted(set(second.targets.tolist()))
    assert set(first.targets.tolist()) - set(second.targets.tolist())
    assert set(optimizer.state_dict()["parts"]) == {"dense", "sparse"}


def test_sparse_tables_train_as_well_as_dense_ones(walk_prepared):
    dense = pipeline.train(small_config(), walk_prepared).metrics["test"]
    sparse = pipeline.train(small_config(train={"sparse": True}), walk_prepared)
    assert sparse.metrics["test"]["hr@10"] > dense["hr@10"] - 0.05
    assert sparse.metrics["test"]["hr@10"] > 2 * sparse.popularity["hr@10"]
