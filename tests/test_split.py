"""Sequences and splits: checked against an obvious per-user reference on random logs."""

from __future__ import annotations

from collections import defaultdict

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

from towerkit.data import (
    Interactions,
    Sequences,
    encode,
    held_out_users,
    leave_one_out,
    temporal_split,
)


@st.composite
def logs(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 60))
    users = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    # Few distinct timestamps, so ties are common and file order must break them.
    stamps = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return pd.DataFrame({"user": users, "item": items, "timestamp": stamps})


def reference_sequences(frame: pd.DataFrame) -> dict[int, list[tuple[int, int]]]:
    """Per raw user, [(timestamp, item)] sorted by time, ties in file order (Python's sort is
    stable)."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for user, item, ts in frame[["user", "item", "timestamp"]].itertuples(index=False):
        out[user].append((ts, item))
    return {u: sorted(rows, key=lambda r: r[0]) for u, rows in out.items()}


def decoded(enc, seqs: Sequences, user_raw) -> list[int]:
    u = int(enc.user_vocab.encode([user_raw])[0])
    return enc.item_vocab.decode(seqs.of(u)).tolist() if len(seqs.of(u)) else []


@settings(max_examples=150, deadline=None)
@given(logs())
def test_leave_one_out_matches_reference(frame):
    enc = encode(Interactions(frame))
    split = leave_one_out(Sequences.from_encoded(enc))
    ref = reference_sequences(frame)
    train = split.train()
    test, valid = split.targets("test"), split.targets("valid")
    assert len(test) == len(ref)
    assert len(valid) == sum(len(r) >= 2 for r in ref.values())
    assert split.counts() == {
        "train": sum(max(len(r) - 2, 0) for r in ref.values()),
        "valid": len(valid),
        "test": len(test),
    }
    test_of = dict(
        zip(enc.user_vocab.decode(test.users), enc.item_vocab.decode(test.items), strict=True)
    )
    valid_of = dict(
        zip(enc.user_vocab.decode(valid.users), enc.item_vocab.decode(valid.items), strict=True)
    )
    for user, rows in ref.items():
        items = [item for _, item in rows]
        assert decoded(enc, split.sequences, user) == items
        assert test_of[user] == items[-1]
        if len(items) >= 2:
            assert valid_of[user] == items[-2]
        assert decoded(enc, train, user) == items[:-2]
    # The history of a test target is everything before it; of a validation target, training.
    seqs = split.sequences
    for targets, drop in ((test, 1), (valid, 2)):
        for u, end in zip(targets.users, targets.history_end, strict=True):
            assert end == seqs.offsets[u + 1] - drop
            assert seqs.items[end] == targets.items[targets.users == u][0]


@settings(max_examples=100, deadline=None)
@given(logs(), st.integers(0, 6), st.integers(0, 6))
def test_temporal_split_matches_reference(frame, a, b):
    valid_start, test_start = min(a, b), max(a, b)
    enc = encode(Interactions(frame))
    split = temporal_split(Sequences.from_encoded(enc), test_start, valid_start)
    ref = reference_sequences(frame)
    train = split.train()
    for user, rows in ref.items():
        assert decoded(enc, train, user) == [i for t, i in rows if t < valid_start]
    for stage, lo, hi in (("valid", valid_start, test_start), ("test", test_start, 99)):
        targets = split.targets(stage)
        got = sorted(
            zip(
                enc.user_vocab.decode(targets.users),
                enc.item_vocab.decode(targets.items),
                strict=True,
            )
        )
        want = sorted((u, i) for u, rows in ref.items() for t, i in rows if lo <= t < hi)
        assert got == want
        # Every target's history ends before its stage starts: no leakage from the future.
        hist_ts = split.sequences.timestamps[np.maximum(targets.history_end - 1, 0)]
        has_history = targets.history_end > split.sequences.offsets[targets.users]
        assert (hist_ts[has_history] < lo).all()


def test_split_argument_errors(tiny_log):
    seqs = Sequences.from_encoded(encode(Interactions(tiny_log)))
    with pytest.raises(ValueError, match="must not come after"):
        temporal_split(seqs, test_start=3, valid_start=5)
    with pytest.raises(ValueError, match="unknown stage"):
        leave_one_out(seqs).targets("train")


def test_sequences_layout(tiny_log):
    enc = encode(Interactions(tiny_log))
    seqs = Sequences.from_encoded(enc)
    assert seqs.offsets.tolist() == [0, 0, 3, 5, 9]  # padding user 0 is empty
    assert seqs.lengths.tolist() == [0, 3, 2, 4]
    assert seqs.user_of_position().tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    # user b (id 1): item 20 then 10 at the same second (file order), then 30.
    assert enc.item_vocab.decode(seqs.of(1)).tolist() == [20, 10, 30]


@settings(max_examples=60, deadline=None)
@given(frame=logs(), seed=st.integers(0, 3))
def test_held_out_users_matches_reference(frame, seed):
    """ComiRec's protocol: whole users are held out; their first 80% is input, the rest
    targets, and nothing of theirs trains."""
    enc = encode(Interactions(frame))
    seqs = Sequences.from_encoded(enc)
    split = held_out_users(seqs, valid=0.2, test=0.2, history=0.8, seed=seed)
    n = int((seqs.lengths > 0).sum())
    assert split.held_out.sum() == round(0.2 * n) + round(0.2 * n)
    assert not split.held_out[seqs.lengths == 0].any()
    train = split.train()
    valid, test = split.targets("valid"), split.targets("test")
    valid_users, test_users = set(valid.users.tolist()), set(test.users.tolist())
    assert not valid_users & test_users
    for u in range(seqs.n_users):
        items = seqs.of(u).tolist()
        if not split.held_out[u]:
            assert train.of(u).tolist() == items  # a training user trains whole
            assert u not in valid_users | test_users
            continue
        assert train.of(u).tolist() == []
        cut = min(max(int(np.floor(0.8 * len(items))), min(1, len(items) - 1)), len(items) - 1)
        stage = valid if u in valid_users else test
        mine = stage.users == u
        assert stage.items[mine].tolist() == items[cut:]
        assert (stage.history_end[mine] == seqs.offsets[u] + cut).all()
    again = held_out_users(seqs, valid=0.2, test=0.2, history=0.8, seed=seed)
    assert np.array_equal(again.held_out, split.held_out)


def test_held_out_users_never_reach_training_batches(tiny_log):
    from towerkit.data.batches import SequenceBatches, TrainingBatches

    seqs = Sequences.from_encoded(encode(Interactions(tiny_log)))
    split = held_out_users(seqs, valid=0.0, test=0.34, seed=1)  # one of the three users
    (held,) = np.flatnonzero(split.held_out)
    samples = TrainingBatches(split, batch_size=4, max_len=3)
    assert held not in set(samples.users.tolist())
    assert samples.n_samples == int(sum(max(n - 1, 0) for u, n in enumerate(seqs.lengths)
                                        if u != held))  # fmt: skip
    windows = SequenceBatches(split, batch_size=4, max_len=3)
    assert held not in set(windows.users.tolist()) and windows.n_samples == samples.n_samples
    with pytest.raises(ValueError, match="history"):
        held_out_users(seqs, history=1.0)
