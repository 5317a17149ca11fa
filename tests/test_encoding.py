"""Vocab and encoding: ids by first appearance in time order, side features, round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towerkit.data import Interactions, Vocab, encode
from towerkit.errors import DataError


@pytest.mark.parametrize("raw", [["b", "a", "c"], [30, 10, 20]])
def test_vocab_round_trip(tmp_path, raw):
    vocab = Vocab(raw, name="item")
    assert len(vocab) == 3 and vocab.size == 4
    assert vocab.encode(raw).tolist() == [1, 2, 3]
    assert vocab.decode([3, 1]).tolist() == [raw[2], raw[0]]
    vocab.save(tmp_path / "v.parquet")
    loaded = Vocab.load(tmp_path / "v.parquet")
    assert loaded == vocab
    assert loaded.name == "item"
    assert loaded.raw.tolist() == raw
    assert type(loaded.raw[0]) is type(vocab.raw[0])


def test_vocab_unknown_ids():
    vocab = Vocab.from_values([5, 3, 5, 9], name="user")
    assert vocab.raw.tolist() == [5, 3, 9]  # order of first appearance
    with pytest.raises(KeyError, match=r"unknown user id\(s\) 7, 8"):
        vocab.encode([3, 7, 8])
    assert vocab.encode([3, 7], unknown="padding").tolist() == [2, 0]
    with pytest.raises(KeyError, match=r"1\.\.3"):
        vocab.decode([0])
    with pytest.raises(ValueError, match="appears twice"):
        Vocab([1, 1])


def test_ids_follow_first_appearance_in_time_order(tiny_log):
    enc = encode(Interactions(tiny_log))
    # Time order (stable): b@1 (item 20), b@1 (item 10), c@2, b@3, a@5, a@6, a@7, a@8, c@9.
    assert enc.user_vocab.raw.tolist() == ["b", "c", "a"]
    assert enc.item_vocab.raw.tolist() == [20, 10, 30, 40]
    assert enc.timestamps.tolist() == [1, 1, 2, 3, 5, 6, 7, 8, 9]
    assert enc.users.tolist() == [1, 1, 2, 1, 3, 3, 3, 3, 2]
    assert enc.items.tolist() == [1, 2, 1, 3, 2, 3, 1, 4, 4]
    assert enc.ratings is None


def test_same_rows_in_same_order_give_identical_encodings(tiny_log):
    """Two sources that differ only in id spelling encode identically."""
    other = tiny_log.assign(user="1m_" + tiny_log["user"])
    a, b = encode(Interactions(tiny_log)), encode(Interactions(other))
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)


def test_side_features(tiny_log):
    users = pd.DataFrame({"user": ["a", "b", "zz"], "gender": ["F", "M", "F"]})
    items = pd.DataFrame(
        {
            "item": [10, 20, 30, 99],
            "genres": [["Comedy", "Drama"], ["Drama"], [], ["Horror"]],
            "score": [0.5, np.nan, 2.0, 1.0],
        }
    )
    enc = encode(
        Interactions(tiny_log, users=users, items=items),
        user_features=["gender"],
        item_features=["genres", "score"],
    )
    # user ids: b=1, c=2, a=3; c has no side row -> 0.
    assert enc.user_features.values["gender"].tolist() == [0, 2, 0, 1]
    assert enc.user_features.vocabs["gender"].raw.tolist() == ["F", "M"]
    assert enc.user_features.kinds == {"gender": "categorical"}
    # item ids: 20=1, 10=2, 30=3, 40=4 (no side row).
    genres = enc.item_features.values["genres"]
    assert genres.shape == (5, 2)
    assert enc.item_features.vocabs["genres"].raw.tolist() == ["Comedy", "Drama"]
    assert genres.tolist() == [[0, 0], [2, 0], [1, 2], [0, 0], [0, 0]]
    score = enc.item_features.values["score"]
    assert score.dtype == np.float32
    assert score.tolist() == [0.0, 0.0, 0.5, 2.0, 0.0]
    assert enc.item_features.cardinality("genres") == 3


def test_feature_errors(tiny_log):
    with pytest.raises(DataError, match="no user table"):
        encode(Interactions(tiny_log), user_features=["age"])
    users = pd.DataFrame({"user": ["a"], "age": [3]})
    with pytest.raises(DataError, match=r"no user feature column 'agee'.*age"):
        encode(Interactions(tiny_log, users=users), user_features=["agee"])
    assert len(encode(Interactions(tiny_log)).user_features) == 0


def test_interactions_validation_and_filters():
    with pytest.raises(DataError, match="no column 'timestamp'"):
        Interactions(pd.DataFrame({"user": [1], "item": [2]}))
    with pytest.raises(DataError, match="empty"):
        Interactions(pd.DataFrame({"user": [], "item": [], "timestamp": []}))
    # A 2-core: item 9 is rare; removing it drops user 3 below 2, which drops item 8 in turn.
    frame = pd.DataFrame(
        {
            "user": [1, 1, 2, 2, 3, 3, 1],
            "item": [7, 6, 7, 6, 9, 8, 8],
            "timestamp": range(7),
            "rating": [5, 4, 3, 5, 5, 5, 1],
        }
    )
    inter = Interactions(frame)
    core = inter.filter(min_user_interactions=2, min_item_interactions=2)
    assert sorted(core.frame["item"].unique().tolist()) == [6, 7]
    assert core.n_users == 2
    assert len(inter.filter()) == 7  # filters are off by default
    liked = inter.filter(min_rating=4)
    assert liked.frame["rating"].min() >= 4 and len(liked) == 5
    with pytest.raises(DataError, match="no interaction is left"):
        inter.filter(min_user_interactions=10)
