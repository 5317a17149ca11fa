"""The contrastive term (hand-computed losses, augmentations, zero weight == no term) and
`towerkit tune` (the space file, a study of two workers on one SQLite file stopped and resumed,
the test stage never read during a search, the study's page)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

from conftest import small_config, towerkit, walk_log
from towerkit.config import ConfigError, config_from_dict, load_config
from towerkit.data.split import Split
from towerkit.runs import pipeline
from towerkit.similarity import get_similarity
from towerkit.training.contrastive import (
    ContrastiveTerm,
    crop,
    info_nce,
    mask,
    reorder,
    same_target_partners,
)
from towerkit.tune import Choice, FloatRange, IntRange, TuneError, read_space, trial_config, tune
from towerkit.types import SequenceBatch

# -- the contrastive term ---------------------------------------------------------------------


def test_info_nce_by_hand():
    """Views z = [a1, a2, b1, b2] = [(1,0), (0,1), (1,0), (0,1)], dot product. Row a1 scores
    (a2, b1, b2) = (0, 1, 0) and its partner is b1: -log(e / (1 + e + 1)) = log(2 + e) - 1;
    every row alike. At temperature 0.5 the logits double: log(2 + e^2) - 2."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = a.clone()
    dot = get_similarity("dot")
    assert float(info_nce(a, b, dot, 1.0)) == pytest.approx(math.log(2 + math.e) - 1, rel=1e-6)
    assert float(info_nce(a, b, dot, 0.5)) == pytest.approx(math.log(2 + math.e**2) - 2, rel=1e-6)
    # Rows of the same target are not each other's negatives: only the partner is left, loss 0.
    same = torch.ones(2, 2, dtype=torch.bool)
    assert float(info_nce(a, b, dot, 1.0, same=same)) == pytest.approx(0.0, abs=1e-7)
    # Cosine compares directions: scaling a view changes nothing.
    cosine = get_similarity("cosine")
    assert float(info_nce(3 * a, b, cosine, 1.0)) == pytest.approx(float(info_nce(a, b, dot, 1.0)))


def _rows(seed: int = 0, n: int = 200, length: int = 12) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    history = np.zeros((n, length), dtype=np.int64)
    for i, size in enumerate(rng.integers(1, length + 1, n)):
        history[i, length - size :] = rng.permutation(np.arange(1, 100))[:size]
    return torch.from_numpy(history)


def _real(row: torch.Tensor) -> list[int]:
    return [int(x) for x in row if x > 0]


def _left_padded(row: torch.Tensor) -> bool:
    real = (row > 0).int()
    return bool((real.diff() >= 0).all())


def test_crop_keeps_a_contiguous_run_of_the_share_asked():
    torch.manual_seed(0)
    history = _rows()
    out = crop(history, 0.6)
    for before, after in zip(history, out, strict=True):
        items, kept = _real(before), _real(after)
        assert _left_padded(after)
        assert len(kept) == max(1, math.ceil(0.6 * len(items)))
        starts = [i for i in range(len(items)) if items[i : i + len(kept)] == kept]
        assert starts, (items, kept)


def test_mask_takes_out_the_share_asked_and_keeps_the_most_recent():
    torch.manual_seed(0)
    history = _rows()
    out = mask(history, 0.3)
    for before, after in zip(history, out, strict=True):
        items, kept = _real(before), _real(after)
        assert _left_padded(after)
        assert len(kept) == len(items) - min(math.floor(0.3 * len(items)), len(items) - 1)
        assert kept[-1] == items[-1]
        it = iter(items)
        assert all(x in it for x in kept)  # a subsequence: order kept


def test_reorder_shuffles_one_run_and_nothing_else():
    torch.manual_seed(0)
    history = _rows()
    out = reorder(history, 0.5)
    changed = 0
    for before, after in zip(history, out, strict=True):
        items, now = _real(before), _real(after)
        assert _left_padded(after) and sorted(items) == sorted(now)
        moved = [i for i in range(len(items)) if items[i] != now[i]]
        if moved:
            changed += 1
            assert moved[-1] - moved[0] + 1 <= math.floor(0.5 * len(items))
    assert changed > 50


def test_same_target_partners_share_the_target_and_are_others_where_they_can():
    torch.manual_seed(0)
    targets = torch.tensor([5, 5, 6, 5, 7, 6])
    for _ in range(20):
        partners = same_target_partners(targets)
        assert torch.equal(targets[partners], targets)
        assert partners[4] == 4  # alone with its target
        others = torch.tensor([0, 1, 2, 3, 5])
        assert (partners[others] != others).all()


def test_the_term_is_the_weighted_info_nce_of_the_views():
    """With dropout 0 a view is a pure function of its sequence: the supervised term equals
    weight x info_nce(own, partner's) computed here by hand from the same partner draw."""
    from towerkit.models.sasrec import SASRec

    torch.manual_seed(0)
    model = SASRec(30, embedding_dim=8, max_len=6, dropout=0.0).eval()
    history = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5], [6, 7, 8, 9], [0, 0, 0, 2]])
    targets = torch.tensor([[0, 2, 3, 9], [0, 0, 5, 9], [7, 8, 9, 4], [0, 0, 0, 4]])
    batch = SequenceBatch(torch.arange(4), history, targets)
    config = config_from_dict(
        {"model": {"name": "sasrec"}},
        ["train.contrastive.weight=0.5", "train.contrastive.views=supervised",
         "train.contrastive.temperature=0.2"],
    ).train.contrastive  # fmt: skip
    cosine = get_similarity("cosine")
    torch.manual_seed(3)
    got = ContrastiveTerm(config, cosine)(model, batch)
    torch.manual_seed(3)
    partners = same_target_partners(targets[:, -1])
    assert partners.tolist() == [1, 0, 3, 2]
    with torch.no_grad():
        own = model.encode_sequence(history)[:, -1]
        other = model.encode_sequence(history[partners])[:, -1]
    same = targets[:, -1, None] == targets[None, :, -1]
    want = 0.5 * info_nce(own, other, cosine, 0.2, same=same)
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)


def _sasrec_config(**contrastive):
    train = {"epochs": 2, "batch_size": 32}
    if contrastive:
        train["contrastive"] = contrastive
    return small_config(model={"name": "sasrec", "embedding_dim": 16, "dropout": 0.1}, train=train)


def test_zero_weight_trains_exactly_as_without_the_term(walk_prepared):
    without = pipeline.train(_sasrec_config(), walk_prepared)
    zero = pipeline.train(_sasrec_config(weight=0.0, views="augment"), walk_prepared)
    on = pipeline.train(_sasrec_config(weight=0.2, temperature=0.3), walk_prepared)
    assert [e.loss for e in zero.result.epochs] == [e.loss for e in without.result.epochs]
    assert zero.metrics == without.metrics
    for key, value in without.model.state_dict().items():
        assert torch.equal(value, zero.model.state_dict()[key]), key
    assert [e.loss for e in on.result.epochs] != [e.loss for e in without.result.epochs]


class _StopInEpoch:
    """Validates like the evaluator, and stops training (as Ctrl-C) in epoch ``stop``."""

    def __init__(self, valid, stop: int) -> None:
        self.valid, self.stop, self.calls = valid, stop, 0
        self.last_seconds = 0.0

    def evaluate(self, model, similarity, device):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return self.valid.evaluate(model, similarity, device)


@pytest.mark.parametrize("views", ["augment", "supervised"])
def test_contrastive_training_learns_and_resumes_bit_identically(views, walk_prepared, tmp_path):
    """The augmentations and partners draw from torch's random source, which checkpoints
    keep: a run stopped after its first epoch and resumed ends as the straight one."""
    config = _sasrec_config(weight=0.2, temperature=0.3, views=views)
    straight = pipeline.train(config, walk_prepared)
    assert straight.metrics["test"]["hr@10"] > straight.popularity["hr@10"]
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(
            config, walk_prepared, run=run, validate=lambda valid, _: _StopInEpoch(valid, 2)
        )
    resumed = pipeline.resume(run, walk_prepared, progress=False)
    assert resumed.metrics == straight.metrics
    assert [e.loss for e in resumed.result.epochs] == [e.loss for e in straight.result.epochs]


def test_contrastive_needs_a_sequential_model():
    with pytest.raises(ConfigError, match=r"train\.contrastive.*youtube_dnn"):
        config_from_dict({}, ["train.contrastive.weight=0.1"])
    with pytest.raises(ConfigError, match="augmentations"):
        config_from_dict({"model": {"name": "sasrec"}}, ["train.contrastive.augmentations=[cut]"])


# -- the space file ---------------------------------------------------------------------------


def _space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_space_file_kinds_and_conditions(tmp_path):
    space = read_space(
        _space(
            tmp_path,
            """
params:
  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  model.n_layers: {low: 1, high: 3}
  negatives.kind: {choices: [full, sampled]}
  negatives.n: {low: 16, high: 256, log: true, when: {negatives.kind: sampled}}
  model.hidden: {choices: [[64], [128, 64]]}
""",
        )
    )
    params = space.params
    assert isinstance(params["train.lr"], FloatRange) and params["train.lr"].log
    assert isinstance(params["model.n_layers"], IntRange)
    assert isinstance(params["negatives.kind"], Choice)
    full = optuna.trial.FixedTrial(
        {"train.lr": 1e-3, "model.n_layers": 2, "negatives.kind": "full", "model.hidden": "[64]"}
    )
    assert space.sample(full) == {
        "train.lr": 1e-3, "model.n_layers": 2, "negatives.kind": "full", "model.hidden": [64]
    }  # fmt: skip
    sampled = optuna.trial.FixedTrial(
        {"train.lr": 1e-3, "model.n_layers": 2, "negatives.kind": "sampled", "negatives.n": 32,
         "model.hidden": "[128, 64]"}
    )  # fmt: skip
    values = space.sample(sampled)
    assert values["negatives.n"] == 32 and values["model.hidden"] == [128, 64]


def test_the_base_config_is_trial_0_where_the_space_can_take_its_values(tmp_path):
    space = read_space(
        _space(
            tmp_path,
            """
params:
  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  model.dropout: {low: 0.3, high: 0.6, step: 0.05}
  model.n_layers: {low: 1, high: 3}
  negatives.kind: {choices: [full, sampled]}
  negatives.n: {low: 16, high: 256, log: true, when: {negatives.kind: sampled}}
  model.ffn_dim: {choices: [64, 128]}
  model.embedding_dim: {low: 16, high: 64, step: 16}
""",
        )
    )
    config = config_from_dict({}, ["model.name=sasrec", "train.lr=0.002", "model.dropout=0.45",
                                   "model.n_layers=2", "model.embedding_dim=40"])  # fmt: skip
    # embedding_dim 40 is off the grid of 16, ffn_dim (None) is no choice, negatives.n does not
    # apply to full negatives: the sampler draws those.
    assert space.base_values(config) == {
        "train.lr": 0.002, "model.dropout": 0.45, "model.n_layers": 2, "negatives.kind": "full"
    }  # fmt: skip
    off = config_from_dict({}, ["model.name=sasrec", "model.dropout=0.42", "train.lr=0.5"])
    assert not {"model.dropout", "train.lr"} & set(space.base_values(off))
    lists = read_space(_space(tmp_path, "params: {model.hidden: {choices: [[64], [256]]}}"))
    assert lists.base_values(config_from_dict({}, ["model.hidden=[256]"])) == {
        "model.hidden": "[256]"  # as Optuna stores a list choice
    }
    chosen = lists.sample(optuna.trial.FixedTrial({"model.hidden": "[256]"}))
    assert chosen == {"model.hidden": [256]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: {train.lr: {low: 0.1, high: 0.01}}", "low 0.1 is above high 0.01"),
        ("params: {train.lr: {low: 0, high: 0.01, log: true}}", "log range needs low > 0"),
        ("params: {train.lr: 0.01}", "params.train.lr: a range"),
        ("params: {a: {choices: [1]}, b: {choices: [2], when: {c: 1}}}", "not a param listed"),
        ("params: {train.lr: {choices: []}}", "at least 1"),
        ("parms: {}", "parms: unknown key"),
        ("[1, 2]", "a mapping with params"),
    ],
)
def test_bad_space_files_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(TuneError, match=message):
        read_space(_space(tmp_path, text))


def test_a_space_key_the_config_lacks_is_refused_before_any_trial(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_tiny_tree()))
    space = _space(tmp_path, "params: {model.dropuot: {low: 0.1, high: 0.5}}")
    with pytest.raises(TuneError, match=r"params\.model\.dropuot.*dropuot.*youtube_dnn"):
        tune(config, space, tmp_path / "study", trials=2)
    assert not (tmp_path / "study").exists()
    # a conditional key is checked with its condition: negatives.n exists for sampled only
    space = _space(
        tmp_path,
        "params: {negatives.kind: {choices: [full, sampled]}, "
        "negatives.n: {low: 8, high: 64, when: {negatives.kind: sampled}}}",
    )
    from towerkit.tune import check_space

    check_space(_tiny_tree(), read_space(space), "space")
    tree = _tiny_tree()
    sampled = trial_config(tree, read_space(space), {"negatives.kind": "sampled",
                                                    "negatives.n": 8}, "t")  # fmt: skip
    assert sampled.negatives.kind == "sampled" and sampled.negatives.n == 8


# -- a study ----------------------------------------------------------------------------------


@pytest.fixture
def study_log(tmp_path) -> Path:
    """A small walk log (300 users, 6,000 interactions) that a study's trials train on in a
    second or two each: what the search does does not depend on the log's size."""
    path = tmp_path / "log.parquet"
    lengths = np.random.default_rng(1).integers(12, 29, 300)
    walk_log(lengths, 150, seed=1).frame[["user", "item", "timestamp"]].to_parquet(path)
    return path


def _tiny_tree(log: Path | None = None) -> dict:
    data = {"path": str(log)} if log is not None else {"dataset": "ml-100k"}
    return {
        "data": {**data, "max_len": 8},
        "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
        "temperature": {"value": 0.1},
        "train": {"epochs": 4, "batch_size": 2048, "lr": 0.005, "patience": 0},
    }


SPACE = """
params:
  train.lr: {low: 0.0001, high: 0.03, log: true}
  model.dropout: {low: 0.0, high: 0.5}
budget: {pruner: hyperband, min_epochs: 1, reduction_factor: 3}
sampler: {seed: 0, startup_trials: 4}
"""


def _cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "towerkit.cli", "-q", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def _trials(study) -> list:
    loaded = optuna.load_study(study_name="towerkit", storage=f"sqlite:///{study / 'study.db'}")
    return loaded.get_trials()


@pytest.mark.slow
def test_study_of_two_workers_stops_resumes_and_its_best_config_trains_to_its_value(
    study_log, tmp_path
):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_tiny_tree(study_log)))
    space = _space(tmp_path, SPACE)
    study = tmp_path / "study"
    args = ("tune", str(config), "--space", str(space), "--workers", "2", "--out", str(study))
    first = _cli(*args, "--trials", "6")
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert len(_trials(study)) == 6

    # Go on towards 10, stop it with Ctrl-C mid-trial, then resume to 10.
    second = _cli("tune", "--resume", "--out", str(study), "--trials", "10", "--workers", "2")
    deadline = time.monotonic() + 300
    while len(_trials(study)) < 8 and time.monotonic() < deadline and second.poll() is None:
        time.sleep(0.2)
    second.send_signal(signal.SIGINT)
    _, stderr = second.communicate(timeout=120)
    if second.returncode != 0:  # stopped: one line saying how to go on, no traceback
        assert second.returncode == 130 and "Traceback" not in stderr, stderr
        assert f"towerkit tune --resume --out {study} --trials 10" in stderr
    third = _cli("tune", "--resume", "--out", str(study), "--trials", "10", "--workers", "2")
    stdout, stderr = third.communicate(timeout=600)
    assert third.returncode == 0, stderr

    trials = _trials(study)
    counted = [t for t in trials if not t.user_attrs.get("interrupted")]
    states = [t.state for t in counted]
    assert len(counted) == 10
    assert optuna.trial.TrialState.PRUNED in states
    assert optuna.trial.TrialState.COMPLETE in states
    for trial in counted:  # every trial is a run directory (one cut early may have none)
        assert (study / trial.user_attrs["run"] / "run.json").exists()
    pruned = [t for t in counted if t.state == optuna.trial.TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 for t in pruned)

    summary = json.loads((study / "summary.json").read_text())
    assert summary["trials"] == 10 and summary["pruned"] == len(pruned)
    assert "Hyperband" in summary["budget"] and summary["test"]["hr@10"] > 0
    assert "pruned" in stdout and "best trial" in stdout
    page = (study / "study.html").read_text()
    assert page.count("plotly-graph-div") >= 4 and "parameter importances" in page

    # best.yaml trains (with the workers' one thread) to the validation value the study found
    best = load_config(study / "best.yaml").on_machine(threads=1, progress=False)
    again = pipeline.train(best, test=False)
    assert again.result.best_valid[best.train.monitor] == pytest.approx(
        summary["best_value"], abs=1e-9
    )


@pytest.mark.slow
def test_a_search_never_reads_the_test_stage(study_log, tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    tree = _tiny_tree(study_log)
    tree["train"]["epochs"] = 2
    config.write_text(yaml.safe_dump(tree))
    space = _space(tmp_path, SPACE)
    targets = Split.targets

    def guarded(self, stage):
        if stage == "test":
            raise AssertionError("the test stage was read during the search")
        return targets(self, stage)

    monkeypatch.setattr(Split, "targets", guarded)
    summary = tune(config, space, tmp_path / "study", trials=3, final=False, progress=False)
    assert summary.test is None and summary.complete >= 1
    first = _trials(tmp_path / "study")[0]  # the base config (model.dropout is its default)
    assert first.params == {"train.lr": 0.005, "model.dropout": 0.1} and first.user_attrs["base"]
    assert summary.base_trial == 0
    metrics = json.loads((tmp_path / "study" / summary.best_run / "metrics.json").read_text())
    assert "test" not in metrics and not (tmp_path / summary.best_run / "outcomes.parquet").exists()
    assert (Path(summary.best_run) / "train.log").exists()  # trained by the run lifecycle
    with pytest.raises(AssertionError, match="test stage was read"):  # the guard works
        pipeline.test_run(summary.best_run)
    monkeypatch.setattr(Split, "targets", targets)
    found = pipeline.test_run(summary.best_run)  # the final step, once, when the search is over
    metrics = json.loads((tmp_path / "study" / summary.best_run / "metrics.json").read_text())
    assert metrics["test"] == found["test"] and metrics["popularity"] == found["popularity"]


def test_study_directory_errors_are_one_line(study_log, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_tiny_tree(study_log)))
    space = _space(tmp_path, SPACE)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    for args, message in [
        (("tune", str(config), "--space", str(space), "--out", str(taken)), "not empty"),
        (("tune", "--resume", "--out", str(tmp_path / "none")), "no study to resume"),
        (("tune", str(config), "--out", str(tmp_path / "s")), "needs a CONFIG and --space"),
        (("tune", str(config), "--space", str(tmp_path / "nope.yaml"), "--out",
          str(tmp_path / "s")), "cannot read the space file"),
    ]:  # fmt: skip
        done = towerkit("-q", *args)  # in this process: the same main(), no interpreter to start
        assert done.returncode == 1, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_study_database_is_one_line(damage, tmp_path):
    """``tune --resume`` on a study.db that is not a readable study: one line naming the file
    and SQLite's reason, exit 1, and the file left as it was."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "config.yaml").write_text(yaml.safe_dump(_tiny_tree()))
    _space(study, SPACE)
    db = study / "study.db"
    made = optuna.create_study(study_name="towerkit", storage=f"sqlite:///{db}")
    for value in (0.1, 0.2):
        made.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    whole = db.read_bytes()
    db.write_bytes(
        {"garbage": bytes(range(256)) * 8, "truncated": whole[: len(whole) // 2], "empty": b""}[
            damage
        ]
    )
    before = db.read_bytes()
    done = towerkit("tune", "--resume", "--out", str(study), "--trials", "3")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {db}: not a study towerkit can read")
    assert db.read_bytes() == before
