"""Synthetic logs (issue 14): exact sizes, determinism, the structure the generator promises,
and a model trained on one beats popularity by a wide margin."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from towerkit.data.synth import SynthSpec, synthesize
from towerkit.errors import DataError


def read(out):
    return pads.dataset(out / "interactions", format="parquet").to_table().to_pandas()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    spec = SynthSpec(users=2_000, items=800, interactions=50_000, seed=3, shard_rows=12_000)
    out = synthesize(spec, tmp_path_factory.mktemp("synth") / "log", progress=False)
    return spec, out, read(out)


def test_sizes_shards_and_ids_are_as_asked(small):
    spec, out, log = small
    assert len(log) == spec.interactions
    assert log["user"].nunique() == spec.users and log["user"].between(1, spec.users).all()
    assert log["item"].between(1, spec.items).all()
    assert log.groupby("user").size().min() >= spec.min_length
    shards = sorted((out / "interactions").iterdir())
    assert len(shards) >= spec.interactions // spec.shard_rows
    assert all(pq.read_metadata(s).num_rows <= 2 * spec.shard_rows for s in shards)
    items = pq.read_table(out / "items.parquet").to_pandas()
    assert items["item"].tolist() == list(range(1, spec.items + 1))
    assert items["topic"].nunique() == spec.n_topics
    assert json.loads((out / "synth.json").read_text())["seed"] == 3
    # Times lie within two spans of the start; the most active user holds <= 100x the mean.
    span = spec.span_days * 86_400
    assert log["timestamp"].min() >= 1_600_000_000
    assert log["timestamp"].max() <= 1_600_000_000 + 2 * span
    mean_extra = spec.interactions / spec.users - spec.min_length
    assert log.groupby("user").size().max() <= spec.min_length + 100 * mean_extra + 1
    # Each user's log is in time order in the file.
    assert (log.groupby("user")["timestamp"].diff().dropna() >= 0).all()


def test_the_same_arguments_give_the_same_log(small, tmp_path):
    spec, _, log = small
    again = read(synthesize(spec, tmp_path / "again", progress=False))
    assert again.equals(log)
    other = SynthSpec(**{**spec.__dict__, "seed": 4})
    assert not read(synthesize(other, tmp_path / "other", progress=False)).equals(log)


def test_the_log_has_long_tails_topics_and_sequences(small):
    spec, out, log = small
    counts = np.sort(log["item"].value_counts().to_numpy())[::-1]
    assert counts[: spec.items // 10].sum() > 0.4 * len(log)  # the top 10% of items: > 40%
    lengths = log.groupby("user").size()
    assert lengths.max() > 5 * lengths.median()  # heavy-tailed activity
    topic = pq.read_table(out / "items.parquet").to_pandas().set_index("item")["topic"]
    log = log.assign(topic=topic.reindex(log["item"]).to_numpy())
    same_user = log["user"].eq(log["user"].shift())
    same_topic = log["topic"].eq(log["topic"].shift())[same_user].mean()
    shares = topic.value_counts(normalize=True)
    assert same_topic > 0.6 > 5 * float((shares**2).sum())  # sessions stay on a topic
    # "Follow" steps: the next item is the previous one's successor in its topic's order.
    items = pq.read_table(out / "items.parquet").to_pandas().set_index("item")
    size = items.groupby("topic").size()
    rank = items["topic_rank"].reindex(log["item"]).to_numpy()
    topics = log["topic"].to_numpy()
    successor = (rank[:-1] + 1) % size.reindex(topics[:-1]).to_numpy()
    follow = same_user.to_numpy()[1:] & (topics[1:] == topics[:-1]) & (rank[1:] == successor)
    expected = spec.follow * (1 - 1 / spec.session)  # a follow step inside a session
    assert follow.sum() / same_user.sum() == pytest.approx(expected, abs=0.05)


def test_bad_requests_are_refused_and_leave_nothing(tmp_path):
    with pytest.raises(DataError, match="ask for at least 500"):
        SynthSpec(users=100, items=10, interactions=499)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="not an empty directory"):
        synthesize(SynthSpec(users=10, items=10, interactions=100), tmp_path / "full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_a_model_trained_on_it_beats_popularity_by_far(tmp_path):
    """The command line end to end: synth, then train on the shards through data.path."""
    out = tmp_path / "log"
    cli = [sys.executable, "-m", "towerkit", "-q"]
    made = subprocess.run(
        [*cli, "data", "synth", "--users", "3000", "--items", "1000", "--interactions", "90000",
         "--seed", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(out / "interactions"), "max_len": 20},
                "model": {"name": "youtube_dnn", "embedding_dim": 32, "hidden": [64]},
                "temperature": {"value": 0.1},
                "train": {"epochs": 4, "batch_size": 512, "lr": 0.005},
            }
        )
    )
    run = tmp_path / "run"
    done = subprocess.run(
        [*cli, "train", str(config), "--out", str(run)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["hr@10"] > 3 * metrics["popularity"]["hr@10"]  # 0.45 vs 0.08
