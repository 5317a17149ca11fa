"""Sequences and splits: checked against an obvious per-user reference on random logs."""

from __future__ import annotations

from collections import defaultdict

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

from towerkit.data import Interactions, Sequences, encode, leave_one_out, temporal_split


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
