"""Warm start (`towerkit train CONFIG --from RUN`): yesterday's run continued on today's log.

The parent trains on "day 1" (120 of 150 users, 70 of 80 items); the child on "day 2": every
user and item but item 3, which day 1 had. Vocabularies extend, known rows are transplanted,
an item absent from the new log keeps its row where no gradient reached it (in-batch negatives
and sparse tables: only rows a step touches move), the optimiser's moments are loaded, and
run.json records the generations. Mismatched models are refused in one line naming the key.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import ctrl_c_after_the_first_checkpoint, towerkit, walk_log
from towerkit.config import config_from_dict
from towerkit.data.vocab import Vocab
from towerkit.errors import DataError
from towerkit.runs import RunDir, pipeline
from towerkit.runs.components import build_loss, build_model
from towerkit.runs.warm import WarmStart
from towerkit.training.trainer import Optimizer

ABSENT = 3  # an item of day 1 that day 2 lacks


def tree(folder, day: int, **model) -> dict:
    return {
        "data": {
            "path": str(folder / f"day{day}.parquet"),
            "max_len": 10,
            "items": {
                "path": str(folder / "items.parquet"),
                "key": "item",
                "features": {"genres": {"kind": "multi"}},
            },
        },
        "model": model or {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
        "temperature": {"value": 0.1},
        "negatives": {"kind": "in_batch"},
        "train": {"epochs": 2, "batch_size": 128, "lr": 0.01, "progress": False, "sparse": True},
    }


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    folder = tmp_path_factory.mktemp("days")
    log = walk_log(np.random.default_rng(0).integers(15, 40, 150), 80, seed=0)
    frame = log.frame.drop(columns="rating")
    frame[(frame.user <= 120) & (frame.item <= 70)].to_parquet(folder / "day1.parquet")
    frame[frame.item != ABSENT].to_parquet(folder / "day2.parquet")
    log.items.to_parquet(folder / "items.parquet")
    for day in (1, 2):
        (folder / f"day{day}.yaml").write_text(yaml.safe_dump(tree(folder, day)))
    return folder


@pytest.fixture(scope="module")
def runs(days):
    """Monday's run from scratch, Tuesday's continued from it through the CLI."""
    monday = pipeline.train(config_from_dict(tree(days, 1)), run=days / "monday").run.path
    done = towerkit("train", str(days / "day2.yaml"), "--from", str(monday),
                    "--out", str(days / "tuesday"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return RunDir(monday), RunDir(days / "tuesday")


def test_the_vocabularies_extend_the_parents(runs):
    monday, tuesday = runs
    assert (len(monday.item_vocab), len(tuesday.item_vocab)) == (70, 80)
    assert (len(monday.user_vocab), len(tuesday.user_vocab)) == (120, 150)
    assert tuesday.item_vocab.raw[:70].tolist() == monday.item_vocab.raw.tolist()
    assert tuesday.user_vocab.raw[:120].tolist() == monday.user_vocab.raw.tolist()
    assert sorted(tuesday.item_vocab.raw[70:].tolist()) == list(range(71, 81))
    # feature values too: known genres keep their codes
    genres = monday.item_features.vocabs["genres"].raw.tolist()
    assert tuesday.item_features.vocabs["genres"].raw[: len(genres)].tolist() == genres


def test_untouched_rows_stay_and_new_rows_train(runs):
    monday, tuesday = runs
    before, after = monday.load_model(), tuesday.load_model()
    old, new = before.item_embedding.weight, after.item_embedding.weight
    absent = int(monday.item_vocab.encode([ABSENT])[0])
    assert torch.equal(old[absent], new[absent])  # no gradient reached it on day 2
    moved = (old[1:71] != new[1:71]).any(dim=1)
    assert int(moved.sum()) == 69  # every item of day 2's log was trained on
    # the new rows trained: they are no longer what a new model starts them at
    config = tuesday.config
    prepared = pipeline.prepare(config.data, progress=False, base=tuesday.base_vocabs())
    torch.manual_seed(config.train.seed)
    fresh = build_model(config, prepared).item_embedding.weight
    assert (fresh[71:] != new[71:]).any(dim=1).all()


def test_run_json_records_the_parent_and_every_generation(runs, days):
    monday, tuesday = runs
    record = json.loads((tuesday.path / "run.json").read_text())
    assert record["parent"] == str(monday.path.absolute())
    first, second = record["lineage"]
    assert first["run"] == str(monday.path.absolute())
    assert first["fingerprint"] == monday.data["fingerprint"]
    assert second == {"run": None, **{k: tuesday.data[k] for k in
                      ("fingerprint", "n_users", "n_items", "interactions")}}  # fmt: skip
    assert record["warm_start"] == {
        "users_kept": 120, "users_new": 30, "items_kept": 70, "items_new": 10,
        "optimizer": "loaded",
    }  # fmt: skip
    # a third generation (on the same log: no new ids) carries the whole lineage
    wednesday = pipeline.train(
        config_from_dict(tree(days, 2)), run=days / "wednesday", warm=tuesday.path
    ).run
    assert [g["run"] for g in wednesday.lineage] == [
        str(monday.path.absolute()), str(tuesday.path.absolute()), None,
    ]  # fmt: skip
    assert wednesday._run["warm_start"]["items_new"] == 0


def test_a_warm_run_evaluates_and_beats_popularity(runs):
    _, tuesday = runs
    metrics = pipeline.evaluate_run(tuesday)  # its log re-prepared onto its own vocabularies
    assert metrics["test"]["hr@10"] == pytest.approx(tuesday.metrics["test"]["hr@10"])
    assert metrics["test"]["hr@10"] > tuesday.metrics["popularity"]["hr@10"] + 0.3


def test_the_in_memory_and_out_of_core_readers_extend_alike(runs, days):
    monday, tuesday = runs
    streamed = pipeline.prepare(tuesday.config.data, progress=False, base=monday.base_vocabs())
    data = tuesday.config.data.model_copy(update={"min_user_interactions": 1})
    in_memory = pipeline.prepare(data, progress=False, base=monday.base_vocabs())
    assert streamed.fingerprint == in_memory.fingerprint == tuesday.data["fingerprint"]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"model": {"name": "sasrec", "embedding_dim": 16}}, "model.name"),
        ({"model": {"name": "youtube_dnn", "embedding_dim": 32, "hidden": [32]}},
         "model.embedding_dim"),
        ({"model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [64]}}, "model.hidden"),
        ({"data": {"max_len": 20}}, "data.max_len"),
        ({"data": {"items": None}}, "data.item_features"),
    ],
)  # fmt: skip
def test_another_model_is_refused_naming_the_key(runs, days, tmp_path, change, key):
    monday, _ = runs
    config = tree(days, 2)
    for section, values in change.items():
        config[section] = values if section == "model" else {**config[section], **values}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = towerkit("train", str(tmp_path / "c.yaml"), "--from", str(monday.path),
                    "--out", str(tmp_path / "child"))  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().startswith(f"error: {key}:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "child").exists()


def test_dropout_may_change(runs, days):
    monday, _ = runs
    config = config_from_dict(tree(days, 2, name="youtube_dnn", embedding_dim=16, hidden=[32],
                                   dropout=0.3))  # fmt: skip
    WarmStart(monday.path).check_config(config)


def test_an_unfinished_parent_and_resume_with_from_are_refused(runs, days, tmp_path):
    monday, _ = runs
    with ctrl_c_after_the_first_checkpoint(), pytest.raises(KeyboardInterrupt):
        pipeline.train(config_from_dict(tree(days, 1)), run=tmp_path / "half")
    done = towerkit("train", str(days / "day2.yaml"), "--from", str(tmp_path / "half"),
                    "--out", str(tmp_path / "child"))  # fmt: skip
    assert done.returncode != 0
    assert "a warm start continues a finished run" in done.stderr
    done = towerkit("train", "--resume", str(tmp_path / "half"), "--from", str(monday.path))
    assert done.returncode != 0 and "no --set, --out or --from" in done.stderr


def test_an_interrupted_warm_run_resumes_onto_its_own_vocabularies(runs, days, tmp_path):
    monday, tuesday = runs
    config = config_from_dict(tree(days, 2))
    with ctrl_c_after_the_first_checkpoint(), pytest.raises(KeyboardInterrupt):
        pipeline.train(config, run=tmp_path / "child", warm=monday.path)
    outcome = pipeline.resume(tmp_path / "child")
    assert outcome.run.finished
    # bit-identical to the warm run trained straight through (the CLI's, above)
    assert outcome.metrics["test"] == tuesday.metrics["test"]


def test_optimizer_moments_are_loaded_with_zero_rows_for_new_ids():
    config = config_from_dict({"train": {"lr": 0.1}}).train
    small = torch.nn.Parameter(torch.ones(3, 2))
    old = Optimizer([small], [], config, total_steps=10)
    small.grad = torch.full((3, 2), 0.5)
    old.step()
    big = torch.nn.Parameter(torch.ones(5, 2))
    new = Optimizer([big], [], config, total_steps=10)
    new.load_moments(old.state_dict())
    moments = new.parts["dense"].state[big]
    assert torch.equal(moments["exp_avg"][:3], old.parts["dense"].state[small]["exp_avg"])
    assert torch.equal(moments["exp_avg"][3:], torch.zeros(2, 2))
    assert float(moments["step"]) == 1.0
    assert new.lr == pytest.approx(0.1)  # the new run's learning rate, not the saved one's
    with pytest.raises(ValueError, match="1 dense parameters then, 2 now"):
        Optimizer([big, small], [], config, total_steps=10).load_moments(old.state_dict())


def test_another_optimiser_starts_fresh_and_says_so(runs, days):
    monday, _ = runs
    config = config_from_dict(
        {**tree(days, 2), "train": {**tree(days, 2)["train"], "sparse": False}}
    )
    moments, said = WarmStart(monday.path).moments(config)
    assert (
        moments is None
        and said == "not loaded: train.sparse was True, is False (another optimiser)"
    )


MODELS = {
    "dssm": {"name": "dssm", "embedding_dim": 16, "id_dim": 16, "hidden": [32]},
    "sasrec": {"name": "sasrec", "embedding_dim": 16},
    "gru4rec": {"name": "gru4rec", "embedding_dim": 16},
    "comirec_sa": {"name": "comirec_sa", "embedding_dim": 16},
    "comirec_dr": {"name": "comirec_dr", "embedding_dim": 16},
    "mind": {"name": "mind", "embedding_dim": 16},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_continues(days, tmp_path, name):
    """Position tables, attention, recurrences, capsules and feature towers are transplanted
    whole; the id tables keep their rows and grow."""
    day1, day2 = (config_from_dict(tree(days, d, **MODELS[name])) for d in (1, 2))
    day1 = day1.model_copy(update={"train": day1.train.model_copy(update={"epochs": 1})})
    parent = pipeline.train(day1, run=tmp_path / "a").run
    before = parent.load_model().state_dict()
    warm = WarmStart(parent.path)
    prepared = pipeline.prepare(day2.data, progress=False, base=warm.vocabs)
    torch.manual_seed(0)
    model = build_model(day2, prepared)
    task, _ = build_loss(day2, model, prepared)
    warm.load(model, task)
    grown = 0
    for key, value in model.named_parameters():
        old = before[key]
        assert torch.equal(value[: old.shape[0]], old), key
        grown += value.shape[0] > old.shape[0]
    assert grown >= 1  # the item table (day 1 had every genre already)
    child = pipeline.train(day2, run=tmp_path / "b", warm=parent.path)
    assert child.run.lineage[0]["fingerprint"] == parent.data["fingerprint"]


def test_ids_of_another_type_are_refused():
    with pytest.raises(DataError, match="the vocab holds integers, the new ids are strings"):
        Vocab.from_values([1, 2], name="item").extend(["3"])


def test_a_warm_start_trains_on_what_is_new_with_the_history_as_input(runs, days, tmp_path):
    """data.split.train_start: the parent's interactions are history, the new ones targets."""
    import pandas as pd

    monday, _ = runs
    log = pd.read_parquet(days / "day2.parquet")
    cut = int(log["timestamp"].quantile(0.7))
    valid, test = int(log["timestamp"].quantile(0.85)), int(log["timestamp"].quantile(0.95))
    split = {"kind": "temporal", "train_start": cut, "valid_start": valid, "test_start": test}
    config = tree(days, 2)
    config["data"]["split"] = split
    config = config_from_dict(config)
    prepared = pipeline.prepare(config.data, progress=False, base=monday.base_vocabs())
    batches = pipeline.build_batches(config, prepared, build_model(config, prepared))
    first = log.sort_values(["user", "timestamp"], kind="stable").groupby("user").cumcount() == 0
    new = (log["timestamp"] >= cut) & (log["timestamp"] < valid) & ~first.sort_index()
    assert batches.n_samples == int(new.sum()) < len(log) // 2
    child = pipeline.train(config, prepared, run=tmp_path / "child", warm=monday.path)
    assert child.metrics["test"]["hr@10"] > child.popularity["hr@10"]
