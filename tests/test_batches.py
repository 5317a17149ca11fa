"""Training batches equal a slow, obviously correct reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from towerkit.data import Interactions, Sequences, TrainingBatches, encode, leave_one_out


def random_split(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user": rng.integers(1, 30, n),
            "item": rng.integers(1, 50, n),
            "timestamp": rng.integers(0, 40, n),
        }
    )
    return leave_one_out(Sequences.from_encoded(encode(Interactions(frame))))


def reference_samples(split, max_len: int) -> list[tuple[int, tuple[int, ...], int]]:
    """Every training position t >= 1 of every user, one Python loop at a time."""
    samples = []
    train = split.train()
    for user in range(1, train.n_users + 1):
        seq = train.of(user).tolist()
        for t in range(1, len(seq)):
            window = seq[max(0, t - max_len) : t]
            history = (0,) * (max_len - len(window)) + tuple(window)
            samples.append((user, history, seq[t]))
    return samples


def as_samples(batches) -> list[tuple[int, tuple[int, ...], int]]:
    out = []
    for batch in batches:
        for u, h, t in zip(
            batch.users.tolist(), batch.history.tolist(), batch.targets.tolist(), strict=True
        ):
            out.append((u, tuple(h), t))
    return out


@pytest.mark.parametrize("max_len", [1, 3, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batches_equal_reference(seed, max_len):
    split = random_split(seed)
    batches = TrainingBatches(split, batch_size=17, max_len=max_len, seed=seed)
    ref = reference_samples(split, max_len)
    assert batches.n_samples == len(ref)
    assert len(batches) == -(-len(ref) // 17)
    got = as_samples(batches.epoch(0))
    assert sorted(got) == sorted(ref)  # every sample exactly once
    unshuffled = TrainingBatches(split, batch_size=17, max_len=max_len, shuffle=False)
    assert as_samples(unshuffled.epoch(0)) == ref  # same order as the reference loop


def test_batch_types_and_shapes():
    split = random_split(3)
    batch = next(iter(TrainingBatches(split, batch_size=8, max_len=5)))
    assert batch.history.shape == (8, 5) and batch.history.dtype == torch.int64
    assert batch.users.shape == batch.targets.shape == (8,)
    assert len(batch) == 8 and batch.to("cpu").users.equal(batch.users)


def test_deterministic_per_seed_and_reshuffled_per_epoch():
    split = random_split(4)
    a = TrainingBatches(split, batch_size=32, max_len=4, seed=7)
    b = TrainingBatches(split, batch_size=32, max_len=4, seed=7)
    c = TrainingBatches(split, batch_size=32, max_len=4, seed=8)
    first_a, first_b, first_c = as_samples(a), as_samples(b), as_samples(c)
    assert first_a == first_b
    assert first_a != first_c
    second_a = as_samples(a)  # iter() again: the next epoch, another order
    assert second_a != first_a and sorted(second_a) == sorted(first_a)
    assert as_samples(a.epoch(1)) == second_a


def test_drop_last_and_bad_arguments():
    split = random_split(5)
    batches = TrainingBatches(split, batch_size=16, max_len=2, drop_last=True)
    sizes = [len(b) for b in batches.epoch(0)]
    assert sizes and set(sizes) == {16} and len(sizes) == batches.n_samples // 16
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainingBatches(split, batch_size=0)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        TrainingBatches(split, max_len=0)


def test_a_split_that_trains_from_a_time_keeps_the_earlier_items_as_history():
    """temporal_split(train_start=...): only positions at or after train_start are targets, and
    their histories (per sample, and the inputs of windows) still reach back before it."""
    from towerkit.data import SequenceBatches, temporal_split

    # user 1: items 1..6 at times 0..5; user 2: items 7..9 at times 0, 4, 5
    frame = pd.DataFrame(
        {
            "user": [1] * 6 + [2] * 3,
            "item": [1, 2, 3, 4, 5, 6, 7, 8, 9],
            "timestamp": [0, 1, 2, 3, 4, 5, 0, 4, 5],
        }
    )
    encoded = encode(Interactions(frame))
    split = temporal_split(Sequences.from_encoded(encoded), test_start=5, valid_start=5,
                           train_start=3)  # fmt: skip
    raw = encoded.item_vocab.raw
    samples = {
        (int(u), tuple(int(raw[i - 1]) for i in h if i), int(raw[t - 1]))
        for u, h, t in as_samples(TrainingBatches(split, batch_size=4, max_len=3, shuffle=False))
    }
    # targets at times 3 and 4 only; histories of up to 3 items from before them
    assert samples == {(1, (1, 2, 3), 4), (1, (2, 3, 4), 5), (2, (7,), 8)}
    windows = SequenceBatches(split, batch_size=4, max_len=4, shuffle=False)
    assert windows.n_samples == 3
    batch = next(iter(windows.epoch(0)))
    history, targets = batch.history.numpy(), batch.targets.numpy()
    assert history.shape[1] == 4  # filled back to max_len with the history before train_start
    by_user = {int(u): (h.tolist(), t.tolist()) for u, h, t in zip(batch.users, history, targets,
                                                                   strict=True)}  # fmt: skip
    to_raw = lambda row: [int(raw[i - 1]) if i else 0 for i in row]  # noqa: E731
    assert (to_raw(by_user[1][0]), to_raw(by_user[1][1])) == ([1, 2, 3, 4], [0, 0, 4, 5])
    assert (to_raw(by_user[2][0]), to_raw(by_user[2][1])) == ([0, 0, 0, 7], [0, 0, 0, 8])
    # a replay share of users trains on its older interactions too
    everyone = temporal_split(split.sequences, 5, 5, train_start=3, replay=1.0)
    assert TrainingBatches(everyone, max_len=3).n_samples == 4 + 1


def test_train_start_is_in_the_fingerprint_and_checked_in_the_config():
    from towerkit.config import ConfigError, config_from_dict
    from towerkit.data import Prepared, temporal_split

    frame = pd.DataFrame({"user": [1, 1, 1], "item": [1, 2, 3], "timestamp": [0, 1, 2]})
    encoded = encode(Interactions(frame))
    seqs = Sequences.from_encoded(encoded)
    plain = Prepared(encoded, temporal_split(seqs, 2, 2))
    later = Prepared(encoded, temporal_split(seqs, 2, 2, train_start=1))
    assert plain.fingerprint != later.fingerprint
    split = {"kind": "temporal", "test_start": 10, "valid_start": 8}
    with pytest.raises(ConfigError, match=r"train_start \(9\) must not come after"):
        config_from_dict({"data": {"split": {**split, "train_start": 9}}})
    with pytest.raises(ConfigError, match="replay is a share of the history before train_start"):
        config_from_dict({"data": {"split": {**split, "replay": 0.1}}})
