"""Sequential user towers (SASRec, GRU4Rec, HSTU) and position-wise training windows."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from towerkit.config import TrainConfig
from towerkit.data import Sequences, leave_one_out
from towerkit.data.batches import Batch, SequenceBatches, TrainingBatches
from towerkit.models import HSTU, GRU4Rec, SASRec
from towerkit.nn import PooledTowerOptions, causal_padding_mask
from towerkit.similarity import Cosine
from towerkit.task import RetrievalTask
from towerkit.task.negatives import (
    BatchContext,
    CatalogueSampler,
    FullNegatives,
    InBatchNegatives,
    MixedNegatives,
    SampledNegatives,
)
from towerkit.training import Trainer
from towerkit.types import SeenPolicy

N_ITEMS = 30


def toy_split(lengths=(3, 7, 12, 25, 2, 9), seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    items = rng.integers(1, N_ITEMS + 1, len(users))
    times = np.arange(len(users))
    return leave_one_out(Sequences.from_arrays(users, items, times, len(lengths)))


def models(max_len=8):
    torch.manual_seed(0)
    return [
        SASRec(N_ITEMS, embedding_dim=16, max_len=max_len, n_layers=2, n_heads=2, dropout=0.0),
        SASRec(N_ITEMS, embedding_dim=16, max_len=max_len, layer_norm="post", dropout=0.0),
        SASRec(N_ITEMS, embedding_dim=16, max_len=max_len, dropout=0.0, filter_mix=0.6),
        GRU4Rec(N_ITEMS, embedding_dim=16, n_layers=2, dropout=0.0, max_len=max_len),
        HSTU(N_ITEMS, embedding_dim=16, max_len=max_len, n_layers=2, n_heads=2, dropout=0.0),
    ]


IDS = ["sasrec-pre", "sasrec-post", "sasrec-filter", "gru4rec", "hstu"]


def test_windows_hold_every_training_position_once_with_its_previous_item():
    split = toy_split()
    windows = SequenceBatches(split, batch_size=3, max_len=4, seed=1)
    flat = TrainingBatches(split, batch_size=1000, max_len=50, shuffle=False)
    seen = []
    for batch in windows.epoch(0):
        assert batch.history.shape == batch.targets.shape and batch.history.shape[1] <= 4
        assert (batch.targets[:, 0] > 0).any()  # cut to the batch's longest window
        real = batch.targets > 0
        assert torch.equal(real, batch.history > 0)  # an input for every target, nothing else
        for w in range(len(batch)):
            user = int(batch.users[w])
            for j in np.flatnonzero(real[w].numpy()):
                seen.append((user, int(batch.targets[w, j]), int(batch.history[w, j])))
    expected = []
    (reference,) = list(flat.epoch(0))
    for user, target, history in zip(
        reference.users, reference.targets, reference.history, strict=True
    ):
        expected.append((int(user), int(target), int(history[-1])))
    assert sorted(seen) == sorted(expected)
    assert windows.n_samples == flat.n_samples == len(expected)
    # Windows are cut from the end: a user's most recent window is full when it can be.
    user4 = np.flatnonzero(windows.users == 4)  # 25 items: 23 for training, 22 targets
    assert sorted(windows.ends[user4] - windows.begins[user4]) == [2, 4, 4, 4, 4, 4]


def test_causal_padding_mask_on_a_tiny_case():
    real = torch.tensor([[False, True, True]])
    mask = causal_padding_mask(real)[0, 0]
    expected = torch.tensor([[True, False, False], [False, True, False], [False, True, True]])
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("model", models(), ids=IDS)
def test_no_position_sees_the_future(model):
    model.eval()
    history = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 9, 10, 11]])
    changed = history.clone()
    changed[:, -2:] = torch.tensor([[20, 21], [22, 23]])
    a, b = model.encode_sequence(history), model.encode_sequence(changed)
    earlier = (history > 0) & (torch.arange(8) < 6)  # real positions before the change
    torch.testing.assert_close(a[earlier], b[earlier])
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("model", models(), ids=IDS)
def test_the_last_position_alone_equals_the_whole_sequences_last_row(model):
    # encode_users (evaluation, serving, the exported tower) runs SASRec's last block for the
    # most recent position only; it must be what the whole sequence gives there.
    model.eval()
    history = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 9, 10, 11],
                            [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 12]])  # fmt: skip
    whole = model.encode_sequence(history)[:, -1]
    torch.testing.assert_close(model.encode_last(history), whole, rtol=1e-5, atol=1e-6)
    batch = Batch(torch.zeros(4, dtype=torch.long), history, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(model.encode_users(batch), whole, rtol=1e-5, atol=1e-6)
    if isinstance(model, SASRec):  # and the last block really ran one position
        seen = []
        hook = model.blocks[-1].ffn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        model.encode_last(history)
        hook.remove()
        assert seen == [torch.Size([4, 1, 16])]
    if isinstance(model, HSTU):  # its last layer: one position's output
        seen = []
        hook = model.layers[-1].out.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        model.encode_last(history)
        hook.remove()
        assert seen == [torch.Size([4, 1, 16])]


@pytest.mark.parametrize("model", models(max_len=12), ids=IDS)
def test_extra_left_padding_does_not_change_a_users_vector(model):
    model.eval()
    items = torch.tensor([5, 9, 2, 7])
    short = torch.cat([torch.zeros(2, dtype=torch.long), items])[None]  # L = 6
    long = torch.cat([torch.zeros(8, dtype=torch.long), items])[None]  # L = 12
    batch = lambda h: Batch(torch.zeros(1, dtype=torch.long), h, torch.zeros(1, dtype=torch.long))  # noqa: E731
    torch.testing.assert_close(model.encode_users(batch(short)), model.encode_users(batch(long)))
    # Longer than max_len: only the last max_len items count.
    older = torch.cat([torch.tensor([1, 2, 3, 4, 6, 8, 10, 11, 12]), items])[None]
    torch.testing.assert_close(
        model.encode_users(batch(older)), model.encode_users(batch(older[:, -12:]))
    )


@pytest.mark.parametrize("model", models(), ids=IDS)
def test_position_wise_training_equals_a_per_prefix_reference(model):
    model.eval()  # no dropout: the two computations must agree exactly
    split = toy_split()
    (batch,) = list(SequenceBatches(split, batch_size=100, max_len=8, shuffle=False).epoch(0))
    positions = model.encode_positions(batch)
    real = batch.targets > 0
    prefixes, targets, rows = [], [], []
    for w, j in zip(*np.nonzero(real.numpy()), strict=True):
        prefix = torch.zeros(8, dtype=torch.long)
        prefix[8 - (j + 1) :] = batch.history[w, : j + 1]
        prefixes.append(prefix)
        targets.append(batch.targets[w, j])
        rows.append(positions[w, j])
    reference = Batch(batch.users[:1].repeat(len(prefixes)), torch.stack(prefixes),
                      torch.stack(targets))  # fmt: skip
    torch.testing.assert_close(model.encode_users(reference), torch.stack(rows))
    task = RetrievalTask(model.encode_items, negatives=FullNegatives(N_ITEMS), temperature=0.1)
    trainer = Trainer(model, task)
    torch.testing.assert_close(trainer.step_loss(batch), trainer.step_loss(reference))


NEGATIVES = {
    "full": FullNegatives(N_ITEMS),
    "sampled": SampledNegatives(CatalogueSampler.uniform(N_ITEMS), 5),
    "in_batch": InBatchNegatives.from_counts(np.ones(N_ITEMS + 1)),
    "mixed": MixedNegatives(
        InBatchNegatives.from_counts(np.ones(N_ITEMS + 1)),
        SampledNegatives(CatalogueSampler.uniform(N_ITEMS), 5, shared=True),
    ),
}


@pytest.mark.parametrize("mode", ["pointwise", "pairwise", "listwise"])
@pytest.mark.parametrize("negatives", list(NEGATIVES))
@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_every_mode_and_negative_strategy_trains(mode, negatives, kind):
    torch.manual_seed(0)
    model = (SASRec if kind == "sasrec" else GRU4Rec)(N_ITEMS, embedding_dim=8, max_len=8)
    task = RetrievalTask(model.encode_items, negatives=NEGATIVES[negatives], similarity=Cosine(),
                         temperature=0.2, mode=mode, logq=negatives != "full")  # fmt: skip
    batch = next(iter(SequenceBatches(toy_split(), batch_size=4, max_len=8)))
    loss = Trainer(model, task).step_loss(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0
    assert model.item_embedding.weight.grad[0].abs().sum() == 0  # padding never trained


def test_constructor_arguments_change_the_output():
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    batch = Batch(torch.zeros(2, dtype=torch.long), history, torch.zeros(2, dtype=torch.long))

    def out(**kwargs):
        torch.manual_seed(0)
        model = SASRec(N_ITEMS, **{"embedding_dim": 8, "max_len": 4, "dropout": 0.0, **kwargs})
        return model.eval().encode_users(batch)

    base = out()
    for change in ({"n_layers": 1}, {"n_heads": 2}, {"ffn_dim": 4}, {"layer_norm": "post"}):
        assert not torch.allclose(base, out(**change)), change
    assert out(embedding_dim=16).shape == (2, 16)
    with pytest.raises(ValueError, match="divisible by n_heads 3"):
        SASRec(N_ITEMS, embedding_dim=8, n_heads=3)
    torch.manual_seed(0)
    tied = SASRec(N_ITEMS, embedding_dim=8)
    assert tied.output_embedding is tied.item_embedding
    assert SASRec(N_ITEMS, share_embeddings=False).output_embedding is not None
    gru = GRU4Rec(N_ITEMS, embedding_dim=8, hidden_size=12)
    assert gru.encode_users(batch).shape == (2, 8) and gru.gru.hidden_size == 12


def test_trainer_accepts_sequence_batches_directly():
    torch.manual_seed(0)
    split = toy_split(lengths=(15, 20, 18, 30, 25, 12))
    model = SASRec(N_ITEMS, embedding_dim=8, max_len=6, dropout=0.0)
    task = RetrievalTask(model.encode_items, negatives=FullNegatives(N_ITEMS), temperature=0.1)
    trainer = Trainer(model, task, TrainConfig(epochs=3, lr=0.01, progress=False))
    batches = SequenceBatches(split, batch_size=2, max_len=6)
    result = trainer.fit(batches)
    losses = [e.loss for e in result.epochs]
    assert losses[-1] < losses[0]
    assert result.epochs[0].samples_per_second > 0
    # Every training position of every window was a query once per epoch.
    assert sum(b.n_queries for b in batches.epoch(0)) == batches.n_samples


@pytest.mark.parametrize(
    "pooling,recent", [("mean", 0), ("sum", 0), ("recency", 0), ("mean", 2), ("attention", 0)]
)
def test_youtube_dnn_windows_equal_independent_samples(pooling, recent):
    """Windows with max_len - 1 items of context give every position the history (and the
    query vector) of the same TrainingBatches sample; mean/sum take the cumulative-sum path."""
    from towerkit.models import YouTubeDNN

    torch.manual_seed(0)
    split = toy_split(lengths=(3, 7, 12, 25, 2, 9, 40))
    tower = PooledTowerOptions(hidden=(16,), dropout=0.0, pooling=pooling, recent_items=recent)
    model = YouTubeDNN(N_ITEMS, embedding_dim=8, max_len=5, tower=tower).eval()
    windows = SequenceBatches(split, batch_size=100, max_len=6, context=4, shuffle=False)
    (batch,) = list(windows.epoch(0))
    assert batch.history.shape == (windows.n_windows, 10)
    real = batch.targets > 0
    got = model.encode_positions(batch)[real]
    # The same (user, target) samples, each with its own 5-item history.
    (flat,) = list(TrainingBatches(split, batch_size=10_000, max_len=5, shuffle=False).epoch(0))
    key = lambda u, t, h: (int(u), int(t), tuple(h.tolist()))  # noqa: E731
    expected = {key(u, t, h): v for u, t, h, v in zip(
        flat.users, flat.targets, flat.history, model.encode_users(flat), strict=True)}  # fmt: skip
    assert len(got) == len(expected)
    for (w, j), vector in zip(zip(*np.nonzero(real.numpy()), strict=True), got, strict=True):
        history = batch.history[w, max(0, j - 4) : j + 1]
        history = torch.cat([torch.zeros(5 - len(history), dtype=torch.long), history])
        torch.testing.assert_close(
            vector, expected[key(batch.users[w], batch.targets[w, j], history)]
        )


def test_sasrec_run_beats_popularity_and_its_vectors_rescore(walk_prepared, tmp_path):
    """End to end: a short SASRec run writes users/items vectors that an independent numpy
    evaluator (cosine, history masked) scores to the reported test metrics."""
    import pyarrow.parquet as pq

    from conftest import small_config
    from towerkit.runs import pipeline

    config = small_config(model={"name": "sasrec", "embedding_dim": 16, "dropout": 0.1},
                          train={"epochs": 6, "batch_size": 16})  # fmt: skip
    outcome = pipeline.train(config, walk_prepared, run=tmp_path / "run")
    test = outcome.metrics["test"]
    assert test["hr@10"] > 2 * outcome.popularity["hr@10"]

    users = pq.read_table(tmp_path / "run" / "users.parquet").to_pandas()
    items = pq.read_table(tmp_path / "run" / "items.parquet").to_pandas()
    item_vectors = np.stack(items["vector"].to_numpy())
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    row_of = {raw: i for i, raw in enumerate(items["item"])}
    hits, ndcg = [], []
    for history, vector in zip(users["history"], users["vector"], strict=True):
        target, seen = row_of[history[-1]], [row_of[i] for i in history[:-1]]
        scores = item_vectors @ (vector / np.linalg.norm(vector))
        scores[seen] = -np.inf
        rank = int((scores > scores[target]).sum())
        hits.append(rank < 10)
        ndcg.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    assert abs(np.mean(hits) - test["hr@10"]) < 0.002
    assert abs(np.mean(ndcg) - test["ndcg@10"]) < 0.002


def test_youtube_dnn_window_batches_hold_batch_size_samples_on_average(walk_prepared):
    """``train.windows``: as many windows a step as hold ``batch_size`` samples on average, so a
    windowed epoch takes as many steps as a per-sample one (most windows are short)."""
    from conftest import small_config
    from towerkit.runs import pipeline

    config = small_config(
        model={"name": "youtube_dnn", "pooling": "mean", "embedding_dim": 8},
        train={"windows": 8, "batch_size": 64},
    )
    model = pipeline.build_model(config, walk_prepared)
    windows = pipeline.build_batches(config, walk_prepared, model)
    assert windows.context == config.data.max_len - 1 and windows.max_len == 8
    per_sample = TrainingBatches(walk_prepared.split, batch_size=64, max_len=10)
    assert abs(len(windows) - len(per_sample)) <= 0.05 * len(per_sample) + 1
    assert windows.n_samples == per_sample.n_samples
    pairs = [b.training_pairs(model) for b in windows.epoch(0)]
    assert all(p.layout is not None for p in pairs)
    assert sum(len(p.positives) for p in pairs) == per_sample.n_samples


@pytest.mark.parametrize(
    ("model", "shared", "expected"),
    [("sasrec", None, "window"), ("youtube_dnn", None, "query"), ("sasrec", False, "query"),
     ("youtube_dnn", True, "batch")],
)  # fmt: skip
def test_sampled_negatives_are_shared_per_window_by_default(model, shared, expected):
    """n negatives per position of windows would be [positions, n, D] vectors, so windows draw
    them per window unless the config says otherwise."""
    from conftest import small_config
    from towerkit.runs import pipeline

    section = {"name": model, "embedding_dim": 8}
    config = small_config(model=section, negatives={"kind": "sampled", "n": 8, "shared": shared})
    negatives = pipeline.build_negatives(config, N_ITEMS, np.ones(N_ITEMS + 1))
    layout = torch.ones(2, 3, dtype=torch.bool) if model == "sasrec" else None
    (candidates,) = negatives.candidates(BatchContext(torch.arange(1, 7), None, layout))
    assert candidates.sharing == expected


@pytest.mark.parametrize("kind", [SASRec, GRU4Rec], ids=["sasrec", "gru4rec"])
def test_item_features_join_the_item_vectors_and_padding_stays_zero(kind):
    from towerkit.data.vocab import Vocab
    from towerkit.types import FeatureTable

    features = FeatureTable()
    brands = np.arange(N_ITEMS + 1) % 3 + 1
    brands[0] = 0  # the padding item has no features
    features.values["brand"], features.kinds["brand"] = brands, "categorical"
    features.vocabs["brand"] = Vocab(["a", "b", "c"])
    torch.manual_seed(0)
    plain = kind(N_ITEMS, embedding_dim=8, max_len=6, dropout=0.0).eval()
    torch.manual_seed(0)
    rich = kind(N_ITEMS, embedding_dim=8, max_len=6, dropout=0.0, item_features=features).eval()
    ids = torch.arange(0, N_ITEMS + 1)
    side = rich.side_projection(rich.item_side(ids))
    torch.testing.assert_close(rich.encode_items(ids), plain.encode_items(ids) + side)
    assert torch.equal(rich.encode_items(torch.tensor([0])), torch.zeros(1, 8))
    # The items of a brand move together when the brand's embedding is trained.
    before = rich.encode_items(ids).detach().clone()
    with torch.no_grad():
        rich.item_side.tables["brand"].weight[1] += 1.0
    moved = (rich.encode_items(ids).detach() - before).abs().sum(1) > 1e-6
    assert moved.tolist() == (torch.from_numpy(brands) == 1).tolist()
    history = torch.tensor([[0, 0, 3, 4], [0, 0, 0, 0]])
    batch = Batch(torch.zeros(2, dtype=torch.long), history, torch.zeros(2, dtype=torch.long))
    assert rich.encode_users(batch).shape == (2, 8)


def test_low_pass_kernel_is_the_last_row_of_the_fft_filter():
    from towerkit.nn.attention import low_pass_kernel

    torch.testing.assert_close(low_pass_kernel(8, 1), torch.full((8,), 1 / 8))  # the mean
    # BSARec's filter: keep the lowest rfft components of the whole sequence, invert, and read
    # the last position; the kernel gives the same number without an FFT.
    x = torch.randn(50, 4, dtype=torch.float64)
    for period, kept in ((50, 3), (50, 26), (7, 2)):
        spectrum = torch.fft.rfft(x[:period], dim=0, norm="ortho")
        spectrum[kept:] = 0
        low = torch.fft.irfft(spectrum, n=period, dim=0, norm="ortho")[-1]
        kernel = low_pass_kernel(period, kept).double()
        torch.testing.assert_close(kernel @ x[:period].flip(0), low)
    # Every frequency kept: the identity.
    torch.testing.assert_close(low_pass_kernel(6, 4), torch.tensor([1.0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="between 1 and max_len // 2 \\+ 1 = 5"):
        low_pass_kernel(8, 6)


def test_frequency_filter_blends_with_attention():
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    batch = Batch(torch.zeros(2, dtype=torch.long), history, torch.zeros(2, dtype=torch.long))

    def out(**kwargs):
        torch.manual_seed(0)
        model = SASRec(N_ITEMS, embedding_dim=8, max_len=4, dropout=0.0, **kwargs)
        for block in model.blocks:
            if block.filter is not None:  # starts as the identity (beta = 1): damp the highs
                block.filter.sqrt_beta.data.fill_(0.5)
        return model.eval().encode_users(batch)

    plain, half, only = out(), out(filter_mix=0.5), out(filter_mix=1.0)
    assert not torch.allclose(plain, half) and not torch.allclose(half, only)
    assert not torch.allclose(half, out(filter_mix=0.5, filter_frequencies=1))
    with pytest.raises(ValueError, match="filter_mix must be between 0 and 1"):
        SASRec(N_ITEMS, filter_mix=1.5)
    from towerkit.config import ConfigError, config_from_dict

    message = "filter_frequencies 30 is more than a sequence of data.max_len 50 has: at most 26"
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({}, ["model.name=sasrec", "data.max_len=50", "model.filter_mix=0.5",
                           "model.filter_frequencies=30"])  # fmt: skip


def test_windows_give_each_position_the_items_it_has_seen():
    """``seen``: the query at column j has seen the window's items up to j (not after)."""
    from towerkit.types import SequenceBatch

    history = torch.tensor([[0, 0, 5, 7, 9], [0, 3, 4, 3, 8]])
    targets = torch.tensor([[0, 7, 9, 2, 6], [3, 4, 3, 8, 1]])
    batch = SequenceBatch(torch.tensor([1, 2]), history, targets)
    model = SASRec(10, embedding_dim=8, max_len=5)
    pairs = batch.training_pairs(model, seen=True)
    assert batch.training_pairs(model).seen is None
    want = []
    for w in range(2):
        for j in range(5):
            if targets[w, j] > 0:
                row = [int(v) for v in history[w, : j + 1] if v > 0]
                want.append(sorted(row))
    got = [sorted(int(v) for v in row if v > 0) for row in pairs.seen.items]
    assert got == want and pairs.seen.before is None
    assert pairs.positives.tolist() == [7, 9, 2, 6, 3, 4, 3, 8, 1]


@pytest.mark.parametrize("exclude", [True, "window"])
def test_exclude_seen_reaches_the_task_through_the_config(walk_prepared, exclude):
    """``negatives.exclude_seen``: a training step's loss is the full softmax with each
    position's earlier items (but not its own target) masked by hand: all of them (true) or
    those of its window ("window")."""
    from conftest import small_config
    from towerkit.runs import pipeline
    from towerkit.training.trainer import _Step

    config = small_config(model={"name": "sasrec", "embedding_dim": 8},
                          negatives={"kind": "full", "exclude_seen": exclude})  # fmt: skip
    model = pipeline.build_model(config, walk_prepared).eval()  # no dropout: comparable
    task = pipeline.build_task(config, model, walk_prepared)
    assert task.exclude_seen
    batches = pipeline.build_batches(config, walk_prepared, model)
    batch = next(iter(batches.epoch(0)))
    assert (batch.before is not None) == (exclude is True)
    loss = _Step(model, task)(batch)
    queries, positives, *_, seen = batch.training_pairs(model, seen=True)
    n_items = walk_prepared.encoded.n_items
    items = model.encode_items(torch.arange(1, n_items + 1))
    scores = task.similarity.pairwise(queries, items, task.temperature.inverse())
    hide = torch.zeros_like(scores, dtype=torch.bool)
    for q in range(len(positives)):
        before = [] if seen.before is None else seen.before[seen.window[q]].tolist()
        for item in [*seen.items[q].tolist(), *before]:
            if item > 0 and item != positives[q]:
                hide[q, item - 1] = True
    assert hide.any()
    want = torch.nn.functional.cross_entropy(scores.masked_fill(hide, -torch.inf), positives - 1)
    torch.testing.assert_close(loss, want)


def test_windows_carry_every_item_before_them_when_asked():
    """``before=True``: each window's queries have seen the user's whole training sequence
    up to them, windows of long users included (windows of 4 over users of up to 11 items)."""
    seqs = Sequences(items=np.arange(1, 21), offsets=np.array([0, 0, 11, 14, 20]),
                     timestamps=np.arange(20))  # fmt: skip
    split = leave_one_out(seqs)
    plain = SequenceBatches(split, batch_size=3, max_len=4, shuffle=False)
    windows = SequenceBatches(
        split, batch_size=3, max_len=4, shuffle=False, seen=SeenPolicy.HISTORY
    )
    model = SASRec(20, embedding_dim=8, max_len=4)
    checked = 0
    for batch, same in zip(windows.epoch(0), plain.epoch(0), strict=True):
        assert same.before is None and torch.equal(batch.history, same.history)
        pairs = batch.training_pairs(model, seen=True)
        for q, target in enumerate(pairs.positives.tolist()):
            u = int(np.searchsorted(seqs.offsets, target - 1, side="right")) - 1
            earlier = set(range(int(seqs.offsets[u]) + 1, target))  # items are positions + 1
            known = {*pairs.seen.items[q].tolist(), *pairs.seen.before[pairs.seen.window[q]]
                     .tolist()} - {0}  # fmt: skip
            assert known == earlier
            checked += 1
    assert checked == windows.n_samples
