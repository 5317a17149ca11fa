"""HSTU: its layer against a hand computation, and a short run that learns.

Causality, left padding and the last-position tower are checked with the other sequential
models (test_sequential.py), ONNX parity with every exported model (test_serve.py), resume with
every resumable case (test_training.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import small_config
from towerkit.config import config_from_dict
from towerkit.models import HSTU
from towerkit.nn import HSTULayer


def silu(z: float) -> float:
    return z / (1 + math.exp(-z))


def layer_norm(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(variance + 1e-6) for v in values]


def test_the_layer_against_a_hand_computation():
    """D = 2, one head of width 1 for u, v, q and k, N = 4; a sequence of 3 with one padded
    position first. Every number by hand (plain Python), the formula of towerkit.nn.hstu."""
    torch.manual_seed(0)
    layer = HSTULayer(dim=2, n_heads=1, attention_dim=1, value_dim=1, dropout=0.0, max_len=4)
    w = [[0.5, -0.3], [0.8, 0.1], [-0.4, 0.9], [0.2, 0.7]]  # rows: u, v, q, k
    out_w, out_b = [[1.5], [-0.5]], [0.1, -0.2]
    bias = [0.3, -0.1, 0.05, 0.0]  # by distance
    with torch.no_grad():
        layer.uvqk.weight.copy_(torch.tensor(w))
        layer.out.weight.copy_(torch.tensor(out_w))
        layer.out.bias.copy_(torch.tensor(out_b))
        layer.position_bias.copy_(torch.tensor(bias))
    x = [[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]]
    real = [False, True, True]

    normed = [layer_norm(row) for row in x]
    u, v, q, k = ([silu(sum(a * b for a, b in zip(row, n, strict=True))) for n in normed]
                  for row in w)  # fmt: skip
    expected = []
    for i in range(3):
        attended = sum(silu(q[i] * k[j] + bias[i - j]) / 4 * v[j]
                       for j in range(i + 1) if real[j])  # fmt: skip
        gated = u[i] * layer_norm([attended])[0]  # one channel: 0 after its LayerNorm
        expected.append([x[i][c] + out_w[c][0] * gated + out_b[c] for c in range(2)])
    got = layer(torch.tensor([x]), torch.tensor([real]))[0]
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)

    # Two channels of value, so the attention is not normalised away: the weights are silu
    # of the logits over N, not a softmax (they need not sum to one).
    layer = HSTULayer(dim=2, n_heads=1, attention_dim=1, value_dim=2, dropout=0.0, max_len=4)
    w = [[0.5, -0.3], [0.1, 0.4], [0.8, 0.1], [0.3, -0.6], [-0.4, 0.9], [0.2, 0.7]]
    with torch.no_grad():
        layer.uvqk.weight.copy_(torch.tensor(w))  # rows: u (2), v (2), q, k
        layer.out.weight.copy_(torch.tensor([[1.0, 0.5], [-0.5, 2.0]]))
        layer.out.bias.zero_()
        layer.position_bias.copy_(torch.tensor(bias))
    proj = [[silu(sum(a * b for a, b in zip(row, n, strict=True))) for row in w] for n in normed]
    expected = []
    for i in range(3):
        attended = [sum(silu(proj[i][4] * proj[j][5] + bias[i - j]) / 4 * proj[j][2 + c]
                        for j in range(i + 1) if real[j]) for c in range(2)]  # fmt: skip
        gated = [proj[i][c] * n for c, n in enumerate(layer_norm(attended))]
        out = [[1.0, 0.5], [-0.5, 2.0]]
        expected.append([x[i][r] + sum(out[r][c] * gated[c] for c in range(2)) for r in range(2)])
    got = layer(torch.tensor([x]), torch.tensor([real]))[0]
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # the last position alone: the same row
    last = layer(torch.tensor([x]), torch.tensor([real]), last=True)[0]
    torch.testing.assert_close(last, got[-1:], rtol=1e-5, atol=1e-6)


def test_the_config_section():
    config = config_from_dict({"model": {"name": "hstu", "embedding_dim": 50, "n_heads": 2}})
    assert config.model.attention() == (2, 2)
    with pytest.raises(Exception, match="divisible by n_heads 3"):
        config_from_dict({"model": {"name": "hstu", "embedding_dim": 50, "n_heads": 3}})
    wide = config_from_dict({"model": {"name": "hstu", "embedding_dim": 50, "n_heads": 3,
                                       "attention_dim": 8, "value_dim": 12}})  # fmt: skip
    model = HSTU(10, embedding_dim=50, n_heads=3, attention_dim=8, value_dim=12, max_len=5)
    assert wide.model.n_heads == 3 and model.layers[0].uvqk.out_features == 2 * 36 + 2 * 24
    assert model.layers[0].out.in_features == 36


def test_a_short_hstu_run_beats_popularity(walk_prepared, tmp_path):
    from towerkit.runs import pipeline

    config = small_config(model={"name": "hstu", "embedding_dim": 16, "n_heads": 2,
                                 "dropout": 0.1},
                          train={"epochs": 6, "batch_size": 16})  # fmt: skip
    outcome = pipeline.train(config, walk_prepared, run=tmp_path / "run")
    assert outcome.metrics["test"]["hr@10"] > 2 * outcome.popularity["hr@10"]


# HSTU's protocol: its preprocessing sorts the whole log by time with pandas' default
# (unstable) sort, then groups by user.
def tied_log(rows: int = 20_000, seed: int = 3):
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user": rng.integers(1, 300, rows),
        "item": rng.integers(1, 500, rows),
        "t": rng.integers(0, 400, rows),  # few distinct times: many ties
    })  # fmt: skip


def test_hstu_ties_reproduce_the_preprocessings_pandas_sort():
    from towerkit.data import Sequences, leave_one_out

    log = tied_log()
    theirs = log.sort_values(by=["t"]).groupby("user").item.apply(list)  # as HSTU's preprocessing
    arrays = (log.user.to_numpy(), log.item.to_numpy(), log.t.to_numpy(), 299)
    ours = Sequences.from_arrays(*arrays, ties="hstu")
    for user, items in theirs.items():
        assert ours.items[ours.offsets[user] : ours.offsets[user + 1]].tolist() == items
    stable = Sequences.from_arrays(*arrays)
    assert not np.array_equal(stable.items, ours.items)  # the ties do move
    # the test targets that differ: counted by inspect, and equal to the two splits' difference
    from towerkit.data.inspect import ties_change_targets

    a, b = leave_one_out(stable), leave_one_out(ours)
    ends = stable.offsets[2:] - 1
    differ = int((stable.items[ends] != ours.items[ends]).sum())
    expected = log.sort_values("t", kind="stable").groupby("user").item.last() != theirs.str[-1]
    assert differ == int(expected.sum()) > 0
    assert ties_change_targets(*arrays[:3]) == differ
    assert np.array_equal(a.valid_end, b.valid_end)  # the same cuts; other items in them


def test_the_tie_order_is_a_split_option(tmp_path):
    from towerkit.data.stream import streamable

    config = config_from_dict({"data": {"split": {"kind": "leave_one_out", "ties": "hstu"}}})
    assert config.data.split.ties == "hstu"
    assert config_from_dict({}).data.split.ties == "stable"
    with pytest.raises(Exception, match="ties"):
        config_from_dict({"data": {"split": {"kind": "leave_one_out", "ties": "random"}}})
    from towerkit.runs import pipeline

    frame = tied_log(5_000).rename(columns={"t": "timestamp"})
    log = tmp_path / "log.csv"
    frame.to_csv(log, index=False)
    own = config_from_dict({"data": {"path": str(log), "split": {"ties": "hstu"}}})
    assert "tie order" in streamable(own.data)
    # the prepared split's test targets are the preprocessing's last items, user by user
    split = pipeline.prepare(own.data, progress=False)
    sequences, items = split.split.sequences, split.encoded.item_vocab.raw
    ours = {user: items[sequences.items[sequences.offsets[u + 1] - 1] - 1]
            for u, user in enumerate(split.encoded.user_vocab.raw, start=1)}  # fmt: skip
    theirs = frame.sort_values(by=["timestamp"]).groupby("user").item.last()
    assert ours == theirs.to_dict()
    stable = frame.sort_values(by=["timestamp"], kind="stable").groupby("user").item.last()
    assert (stable != theirs).any()  # the orders disagree on this log


# The relative time bias (model.time_bias).
def test_time_buckets_by_hand():
    from towerkit.nn.hstu import TIME_BUCKETS, time_buckets

    at = torch.tensor([[3_600 + 100, 100]])
    times = torch.tensor([[100, 99, 98, 100 - 86_400 * 365, 0]])
    got = time_buckets(at, times)[0].tolist()
    expected = [[int(math.log(max(abs(a - t), 1)) / 0.301) for t in times[0].tolist()]
                for a in at[0].tolist()]  # fmt: skip
    assert got == expected
    assert got[0][0] == 27 and got[1][0] == 0 and got[1][1] == 0 and got[1][2] == 2
    assert got[1][3] == 57  # a year
    assert time_buckets(torch.tensor([[10**18]]), torch.tensor([[0]])).item() == TIME_BUCKETS


def test_the_time_bias_against_a_hand_computation():
    """The first hand computation's layer with a time bias: each logit gains the value of its
    gap's bucket (one table, shared by the heads)."""
    from towerkit.nn.hstu import time_buckets

    layer = HSTULayer(2, 1, 1, 2, dropout=0.0, max_len=4, time_bias=True)
    w = [[0.5, -0.3], [0.1, 0.4], [0.8, 0.1], [0.3, -0.6], [-0.4, 0.9], [0.2, 0.7]]
    table = [0.01 * (i % 7) - 0.02 for i in range(129)]
    with torch.no_grad():
        layer.uvqk.weight.copy_(torch.tensor(w))
        layer.out.weight.copy_(torch.tensor([[1.0, 0.5], [-0.5, 2.0]]))
        layer.out.bias.zero_()
        layer.position_bias.copy_(torch.tensor([0.3, -0.1, 0.05, 0.0]))
        layer.time_bias.copy_(torch.tensor(table))
    x = [[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]]
    real = [False, True, True]
    times, at = [0, 1_000, 1_000 + 7_200], [1_000, 8_200, 8_200 + 90_000]
    bias = [0.3, -0.1, 0.05, 0.0]
    normed = [layer_norm(row) for row in x]
    proj = [[silu(sum(a * b for a, b in zip(row, n, strict=True))) for row in w] for n in normed]
    expected = []

    def gap(i, j):
        return table[int(math.log(max(abs(at[i] - times[j]), 1)) / 0.301)]

    for i in range(3):
        attended = [sum(silu(proj[i][4] * proj[j][5] + bias[i - j] + gap(i, j)) / 4 * proj[j][2 + c]
                        for j in range(i + 1) if real[j]) for c in range(2)]  # fmt: skip
        gated = [proj[i][c] * n for c, n in enumerate(layer_norm(attended))]
        out = [[1.0, 0.5], [-0.5, 2.0]]
        expected.append([x[i][r] + sum(out[r][c] * gated[c] for c in range(2)) for r in range(2)])
    buckets = time_buckets(torch.tensor([at]), torch.tensor([times]))
    got = layer(torch.tensor([x]), torch.tensor([real]), buckets=buckets)[0]
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="time buckets"):
        layer(torch.tensor([x]), torch.tensor([real]))


def test_the_time_bias_reads_gaps_only_and_the_towers_agree():
    """A user's query (``encode_users``: the history's times and when the query is made) is the
    training query at the last position (``encode_positions``: each position's target time);
    moving every time by a constant changes nothing, moving one gap changes the vector."""
    from towerkit.types import Batch, SequenceBatch

    torch.manual_seed(0)
    model = HSTU(30, embedding_dim=8, n_heads=2, max_len=6, time_bias=True).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.time_bias.normal_(std=1.0)  # large enough to matter
    history = torch.tensor([[0, 0, 3, 7, 9, 4], [5, 6, 7, 8, 9, 10]])
    times = torch.tensor([[0, 0, 100, 4_000, 90_000, 90_030],
                          [10, 20, 30, 40, 50, 60]])  # fmt: skip
    at = torch.tensor([200_000, 70])
    users = torch.zeros(2, dtype=torch.long)
    query = model.encode_users(Batch(users, history, users, times=times, at=at))
    target_times = torch.cat([times[:, 1:], at[:, None]], dim=1)
    window = SequenceBatch(users, history, history, times=times, at=target_times)
    torch.testing.assert_close(query, model.encode_positions(window)[:, -1])
    shifted = model.encode_users(Batch(users, history, users, times=times + 10**6, at=at + 10**6))
    torch.testing.assert_close(query, shifted)
    later = model.encode_users(Batch(users, history, users, times=times, at=at + 10**7))
    assert (later - query).abs().max() > 1e-3
    with pytest.raises(ValueError, match="time_bias"):
        model.encode_users(Batch(users, history, users))


def test_the_time_bias_needs_times_and_no_contrastive_views():
    with_time = {"model": {"name": "hstu", "time_bias": True}}
    assert config_from_dict(with_time).model.time_bias
    with pytest.raises(Exception, match="has none"):
        config_from_dict({**with_time, "data": {"dataset": "amazon-beauty"}})
    with pytest.raises(Exception, match="views carry no times"):
        config_from_dict({**with_time, "train": {"contrastive": {"weight": 0.1}}})


def test_a_short_run_with_the_time_bias(walk_prepared, tmp_path):
    """Trains on windows with their times, evaluates with the stages' times, beats popularity;
    then recommends, exports (ONNX with a times input, parity checked) and serves, every
    query made at a time the caller may give."""
    from fastapi.testclient import TestClient

    from towerkit.retrieval import Retriever
    from towerkit.retrieval.export import ExportDir, export_run
    from towerkit.retrieval.towers import TimesNeeded
    from towerkit.runs import RunDir, pipeline
    from towerkit.serve import create_app

    config = small_config(model={"name": "hstu", "embedding_dim": 16, "n_heads": 2,
                                 "dropout": 0.1, "time_bias": True},
                          train={"epochs": 6, "batch_size": 16})  # fmt: skip
    outcome = pipeline.train(config, walk_prepared, run=tmp_path / "run")
    assert outcome.model.reads_times
    assert outcome.metrics["test"]["hr@10"] > 2 * outcome.popularity["hr@10"]

    run = RunDir(tmp_path / "run")
    retriever = Retriever.from_run(run)
    sequences = walk_prepared.split.sequences
    assert np.array_equal(run.history_times, sequences.timestamps)
    assert retriever.reads_times and retriever.as_of == sequences.timestamps.max()
    users = [int(u) for u in run.user_vocab.raw[:5]]
    now = retriever.recommend(users, 10)
    assert np.array_equal(now.ids, retriever.recommend(users, 10, at=retriever.as_of).ids)
    codes = retriever.encode_users(users)
    later = retriever.tower_queries(codes, retriever.as_of + 10**8)
    assert np.abs(later - retriever.tower_queries(codes)).max() > 1e-4  # the gap is read
    history = [[int(i) for i in run.item_vocab.raw[:4]]]
    with pytest.raises(TimesNeeded, match="give one list of times"):
        retriever.recommend_history(history, 5)
    stamps = [[1_000, 2_000, 3_000, 4_000]]
    mine = retriever.recommend_history(history, 5, times=stamps, at=[5_000])

    export = export_run(run, tmp_path / "export")
    manifest = ExportDir(export).manifest
    assert (
        manifest["onnx"]["parity"] < 1e-5 and "times" in ExportDir(export).retriever().tower.inputs
    )
    onnx = ExportDir(export).retriever()
    assert onnx.reads_times and onnx.as_of == retriever.as_of
    assert np.array_equal(onnx.recommend(users, 10).ids, now.ids)
    assert np.array_equal(onnx.recommend_history(history, 5, times=stamps, at=[5_000]).ids,
                          mine.ids)  # fmt: skip

    with TestClient(create_app(export)) as client:
        by_id = client.post("/recommend", json={"user": users[0], "k": 10})
        assert by_id.status_code == 200, by_id.text
        assert [i["id"] for i in by_id.json()["items"]] == list(now.items[0])
        given = {"history": history[0], "times": stamps[0], "at": 5_000, "k": 5}
        answer = client.post("/recommend", json=given)
        assert [i["id"] for i in answer.json()["items"]] == list(mine.items[0])
        missing = client.post("/recommend", json={"history": history[0], "k": 5})
        assert missing.status_code == 422 and "give times" in missing.text
        short = client.post("/recommend", json={**given, "times": stamps[0][:2]})
        assert short.status_code == 422 and "one time per item" in short.text
        far = client.post("/recommend", json={**given, "at": 10**15})
        assert far.status_code == 422 and "at" in far.text
