"""Faster steps with the same models: bf16 autocast (train.precision) and torch.compile
(train.compile), with the parts that must stay fp32 kept in fp32."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import small_config
from test_training import synthetic_split, trainer
from towerkit.config import ConfigError, config_from_dict
from towerkit.data import TrainingBatches
from towerkit.evaluation import Evaluator
from towerkit.runs import pipeline
from towerkit.similarity import Cosine
from towerkit.training import speed
from towerkit.training.speed import PrecisionError, resolve_precision


def test_fp32_is_the_default_and_unknown_settings_are_refused():
    assert config_from_dict({}).train.precision == "fp32"
    assert config_from_dict({}).train.compile is False
    with pytest.raises(ConfigError, match=r"train\.precision"):
        config_from_dict({}, ["train.precision=fp16"])
    assert resolve_precision("fp32", "cpu").name == "fp32"


def test_auto_keeps_bf16_only_where_the_runs_own_steps_are_measured_faster(monkeypatch):
    monkeypatch.setattr(speed, "bf16_problem", lambda device: None)
    assert resolve_precision("auto", "cpu").measure  # the trainer times its first steps
    fast = speed.measured(1.0, 0.5, "cpu")
    assert (fast.name, fast.reason) == ("bf16", "bf16 steps ran 2.00x fp32 here")
    slow = speed.measured(1.0, 1.5, "cpu")
    assert (slow.name, slow.reason) == ("fp32", "bf16 steps ran only 0.67x fp32 here")
    assert speed.measured(1.0, 1.0 / 1.05, "cpu").name == "fp32"  # a gain below 1.1x


def test_auto_times_the_first_steps_and_trains_as_if_it_had_started_so(monkeypatch, caplog):
    """The probe updates nothing and restores every random state: the run equals one started
    in the precision it chose. A resumed run keeps that choice without measuring again."""
    from towerkit.training import trainer as trainer_module

    monkeypatch.setattr(speed, "bf16_problem", lambda device: None)
    probed = []

    def forced(fp32_over_bf16, one, kind):
        probed.append(fp32_over_bf16)
        return speed.Precision("bf16", kind, "forced by the test")

    monkeypatch.setattr(trainer_module, "measured", forced)
    enc, split = synthetic_split()
    states = []
    auto = trainer(enc.n_items, epochs=2, precision="auto")
    with caplog.at_level(logging.INFO, logger="towerkit.training.trainer"):
        result = auto.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=0),
                          on_epoch=states.append)  # fmt: skip
    assert len(probed) == 1 and probed[0] > 0
    assert result.precision == "bf16 (forced by the test)"
    assert "precision: bf16 (forced by the test)" in caplog.messages
    explicit = trainer(enc.n_items, epochs=2, precision="bf16")
    explicit.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=0))
    for (name, a), b in zip(auto.model.state_dict().items(), explicit.model.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [s.precision for s in states] == ["bf16", "bf16"]
    resumed = trainer(enc.n_items, epochs=2, precision="auto")
    again = resumed.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=0), state=states[0])
    assert again.precision == "bf16 (chosen at the start)" and len(probed) == 1


def test_bf16_asked_for_where_the_device_lacks_it_is_a_config_error(monkeypatch):
    from towerkit.config import training

    monkeypatch.setattr(training, "bf16_problem", lambda device: "this CPU has no bf16 insts")
    message = r"train\.precision: this CPU has no bf16 insts; use fp32 or auto"
    with pytest.raises(ConfigError, match=message):
        config_from_dict({}, ["train.precision=bf16"])
    config_from_dict({}, ["train.precision=auto"])  # auto falls back to fp32 instead


def test_bf16_without_hardware_support_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(speed, "bf16_problem", lambda device: "this CPU has no bf16 instructions")
    with pytest.raises(PrecisionError, match=r"^train\.precision bf16: this CPU has no bf16 "):
        resolve_precision("bf16", "cpu")
    auto = resolve_precision("auto", "cpu")
    assert (auto.name, auto.reason, auto.measure) == (
        "fp32",
        "this CPU has no bf16 instructions",
        False,
    )


def test_a_bf16_step_runs_the_tower_in_bf16_and_the_loss_in_fp32(monkeypatch):
    monkeypatch.setattr(speed, "bf16_problem", lambda device: None)  # autocast emulates it
    enc, split = synthetic_split()
    batch = next(iter(TrainingBatches(split, batch_size=32, max_len=5, shuffle=False)))
    full, half = trainer(enc.n_items), trainer(enc.n_items, precision="bf16")
    full.model.eval(), half.model.eval()
    seen = {}

    def record(module, args, output):
        seen["tower"] = output.dtype

    def scored(queries, items, scale=None):
        seen["queries"] = queries.dtype
        seen["scores"] = Cosine.pairwise(half.task.similarity, queries, items, scale).dtype
        return Cosine.pairwise(half.task.similarity, queries, items, scale)

    half.model.user_tower.mlp.register_forward_hook(record)
    monkeypatch.setattr(half.task.similarity, "pairwise", scored)
    loss = half.step_loss(batch)
    assert seen == {"tower": torch.bfloat16, "queries": torch.float32, "scores": torch.float32}
    assert loss.dtype == torch.float32
    reference = full.step_loss(batch)
    assert loss.item() != reference.item()  # bf16 did run
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)
    loss.backward()
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in half.model.parameters())


def test_bf16_learns_the_cycle_and_validates_at_its_precision(monkeypatch):
    monkeypatch.setattr(speed, "bf16_problem", lambda device: None)
    enc, split = synthetic_split()
    t = trainer(enc.n_items, epochs=15, precision="bf16")
    valid = Evaluator(split, "valid", enc.n_items, ks=(1, 10), max_len=5)
    calls = []
    evaluate = valid.evaluate

    def spy(model, similarity, device):
        calls.append(torch.is_autocast_enabled("cpu"))
        return evaluate(model, similarity, device)

    monkeypatch.setattr(valid, "evaluate", spy)
    result = t.fit(TrainingBatches(split, batch_size=16, max_len=5, seed=0), valid)
    assert result.precision == "bf16" and result.compiled is None
    assert calls and all(calls)  # the towers validated under bf16 autocast
    test = Evaluator(split, "test", enc.n_items, ks=(1, 10), max_len=5)
    assert test.evaluate(t.model, Cosine())["hr@1"] > 0.8


def test_compile_trains_the_same_model(walk_prepared):
    """A real torch.compile of a small run: without dropout (inductor draws its own masks) the
    losses follow the eager ones to rounding."""
    runs = {}
    model = {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32], "dropout": 0.0}
    for compiled in (False, True):
        config = small_config(model=model, train={"epochs": 4, "compile": compiled})
        runs[compiled] = pipeline.train(config, walk_prepared)
    eager, fast = (runs[c].result.epochs for c in (False, True))
    for a, b in zip(eager, fast, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-3)
    assert (runs[False].result.compiled, runs[True].result.compiled) == (None, "compiled")
    assert runs[True].result.precision == "fp32"
    test, pop = runs[True].metrics["test"], runs[True].popularity
    assert test["ndcg@10"] > 1.5 * pop["ndcg@10"], (test, pop, runs[False].metrics["test"])


def test_a_failed_compile_falls_back_to_eager_and_says_why(monkeypatch, caplog):
    enc, split = synthetic_split()
    batch = next(iter(TrainingBatches(split, batch_size=32, max_len=5, shuffle=False)))
    eager = trainer(enc.n_items)
    eager.model.eval()

    def broken(module, **kwargs):
        def call(*args):
            raise RuntimeError("inductor exploded\nC++ compile error: ...")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="towerkit.training.speed"):
        fallen = trainer(enc.n_items, compile=True)
        fallen.model.eval()
        loss = fallen.step_loss(batch)
        fallen.step_loss(batch)  # and stays eager, warned once
    assert loss.item() == eager.step_loss(batch).item()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "train.compile: compiling the training step failed, running eagerly: "
        "RuntimeError: inductor exploded"
    ]
    assert fallen.fit(TrainingBatches(split, batch_size=32, max_len=5)).compiled == (
        "eager: RuntimeError: inductor exploded"
    )
    # Known before trying: no C++ compiler for inductor.
    caplog.clear()
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="towerkit.training.speed"):
        trainer(enc.n_items, compile=True)
    assert [r.getMessage() for r in caplog.records] == [
        "train.compile: running eagerly: no C++ compiler for inductor's CPU kernels (install g++)"
    ]
