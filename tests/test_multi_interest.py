"""Multi-interest users (issue 15, first part): K query vectors per user searched and merged by
best score, with the user's exclusions applied to every interest, and evaluated exactly by the
best interest's score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from towerkit.evaluation import Evaluator, best_interest_scores
from towerkit.index import make_index, merge_interests
from towerkit.similarity import Cosine, Dot


def brute_force(users: np.ndarray, items: np.ndarray, k: int, exclude: list[set[int]]):
    """Per user: each item's best score over the interests (dot), excluded ids dropped."""
    scores = np.einsum("ukd,nd->ukn", users, items).max(1)  # (U, N); item id = column + 1
    out = []
    for row, banned in zip(scores, exclude, strict=True):
        ranked = [i + 1 for i in np.argsort(-row, kind="stable") if i + 1 not in banned]
        out.append(ranked[:k])
    return np.array(out)


def test_merge_keeps_each_id_once_at_its_best_score():
    # user 0: interest 0 finds 5 (0.9), 7 (0.4); interest 1 finds 7 (0.8), 5 (0.1), 2 (0.3)
    ids = np.array([[5, 7, -1], [7, 2, 5], [1, 2, 3], [3, 2, 1]])
    scores = np.array([[0.9, 0.4, -np.inf], [0.8, 0.3, 0.1], [3, 2, 1], [3, 2, 1]], dtype=float)
    merged_ids, merged_scores = merge_interests(ids, scores, interests=2, k=4)
    assert merged_ids.tolist() == [[5, 7, 2, -1], [1, 3, 2, -1]]
    assert merged_scores[0, :3].tolist() == pytest.approx([0.9, 0.8, 0.3])
    assert merged_scores[0, 3] == -np.inf
    # ties keep interest order: user 1's 1 (interest 0) before 3 (interest 1), both 3.0
    assert merged_scores[1].tolist()[:3] == [3.0, 3.0, 2.0]


def test_merge_equals_a_python_reference_on_random_lists():
    rng = np.random.default_rng(0)
    users, interests, width, k = 40, 3, 6, 5
    ids = rng.integers(-1, 12, (users * interests, width))
    scores = rng.normal(size=ids.shape)
    got_ids, got_scores = merge_interests(ids, scores, interests, k)
    for u in range(users):
        best = {}
        for row in range(u * interests, (u + 1) * interests):
            for i, s in zip(ids[row], scores[row], strict=True):
                if i >= 0 and s > best.get(i, -np.inf):
                    best[i] = s
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        assert got_ids[u, : len(ranked)].tolist() == [i for i, _ in ranked]
        assert got_scores[u, : len(ranked)] == pytest.approx([s for _, s in ranked], rel=1e-6)
        assert (got_ids[u, len(ranked) :] == -1).all()


@pytest.mark.parametrize("kind", ["exact", "faiss-flat"])
def test_search_multi_is_the_best_interest_ranking_with_exclusions_once_per_user(kind):
    rng = np.random.default_rng(1)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    users = rng.normal(size=(20, 4, 8)).astype(np.float32)
    exclude = [set(rng.choice(np.arange(1, 51), 5, replace=False).tolist()) for _ in range(20)]
    index = make_index(kind, Dot()).build(items, ids=np.arange(1, 51))
    ids, _ = index.search_multi(users, 10, exclude=[sorted(e) for e in exclude])
    assert np.array_equal(ids, brute_force(users, items, 10, exclude))
    for row, banned in zip(ids, exclude, strict=True):
        assert not banned & set(row.tolist())  # no interest brought an excluded item back


def test_one_interest_is_a_single_vector_search():
    rng = np.random.default_rng(2)
    items = rng.normal(size=(30, 6)).astype(np.float32)
    users = rng.normal(size=(10, 6)).astype(np.float32)
    index = make_index("exact", Cosine()).build(items, ids=np.arange(1, 31))
    exclude = [[1, 2, 3]] * 10
    single = index.search(users, 7, exclude=exclude)
    multi = index.search_multi(users[:, None, :], 7, exclude=exclude)
    assert np.array_equal(single[0], multi[0])
    assert np.allclose(single[1], multi[1])


def test_the_evaluator_ranks_multi_interest_users_by_their_best_interest():
    from test_evaluation import random_split

    enc, split = random_split(n_users=60, n_items=40)
    g = torch.Generator().manual_seed(3)
    users = torch.randn(enc.n_users, 3, 8, generator=g)
    items = torch.randn(enc.n_items, 8, generator=g)
    evaluator = Evaluator(split, "test", enc.n_items, ks=(5, 10), max_bytes=1 << 16)
    metrics = evaluator.evaluate_vectors(users, items, Dot(), interests=3)
    # The same as a single-vector evaluation of precomputed best-interest scores.
    best = best_interest_scores(users, items, Dot(), 3)
    assert torch.equal(best, torch.einsum("ukd,nd->ukn", users, items).amax(1))
    expected = evaluator._metrics(lambda b, e: best[b:e])
    assert metrics == pytest.approx(expected)
    # K = 1 is the single-vector evaluation; an index ranks as exact search does.
    assert evaluator.evaluate_vectors(users[:, :1], items, Dot(), interests=1) == pytest.approx(
        evaluator.evaluate_vectors(users[:, 0], items, Dot())
    )
    flat = evaluator.evaluate_index(users, items, Dot(), "faiss-flat", interests=3)
    assert flat["index_recall@10"] == 1.0
    assert flat["hr@10"] == pytest.approx(metrics["hr@10"])


# --------------------------------------------------------------------------------------------
# The models: routing, padding, label-aware training, end to end
# --------------------------------------------------------------------------------------------


def slow_route(behaviours, mask, logits, iterations):
    """Dynamic routing written out loop by loop (one user, behaviour, interest at a time)."""
    users, interests, length, dim = behaviours.shape
    out = torch.zeros(users, interests, dim, dtype=torch.float64)
    for u in range(users):
        b = logits[u].double().clone()
        real = [i for i in range(length) if mask[u, i]]
        for step in range(iterations):
            v = []
            for j in range(interests):
                z = torch.zeros(dim, dtype=torch.float64)
                for i in real:
                    w = torch.exp(b[j, i]) / sum(torch.exp(b[m, i]) for m in range(interests))
                    z += w * behaviours[u, j, i].double()
                n2 = float(z @ z)
                v.append(z * n2 / (1 + n2) / np.sqrt(n2 + 1e-9))
            if step < iterations - 1:
                for j in range(interests):
                    for i in real:
                        b[j, i] += float(behaviours[u, j, i].double() @ v[j])
        out[u] = torch.stack(v)
    return out


def test_routing_equals_a_slow_reference():
    from towerkit.models.multi_interest import route

    g = torch.Generator().manual_seed(0)
    behaviours = torch.randn(3, 4, 6, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    logits = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    fast = route(behaviours, mask, logits, iterations=3)
    assert torch.allclose(fast, slow_route(behaviours, mask, logits, 3), atol=1e-10)


MODEL_NAMES = ["comirec_sa", "comirec_dr", "mind"]


def build(name: str, interests: int = 3, n_items: int = 30, max_len: int = 10):
    from towerkit.config import config_from_dict
    from towerkit.models import build_model

    section = config_from_dict({"model": {"name": name, "embedding_dim": 8,
                                          "interests": interests}}).model  # fmt: skip
    torch.manual_seed(0)
    return build_model(section, n_users=5, n_items=n_items, max_len=max_len).eval()


def user_batch(history):
    from towerkit.types import Batch

    history = torch.as_tensor(history)
    users = torch.zeros(len(history), dtype=torch.long)
    return Batch(users, history, users)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_padding_never_counts(name):
    model = build(name)
    short = user_batch([[0, 0, 3, 7, 9], [0, 0, 0, 0, 4]])
    longer = user_batch([[0, 0, 0, 0, 0, 0, 0, 3, 7, 9], [0] * 9 + [4]])
    with torch.no_grad():
        a, b = model.encode_users(short), model.encode_users(longer)
        # what a padded slot's table row holds does not matter either
        model.item_embedding.weight[0] = 5.0
        c = model.encode_users(longer)
    assert a.shape == (2, 3, 8)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(b, c, atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_label_aware_training_uses_the_interest_that_fits_the_target_best(name):
    model = build(name)
    batch = user_batch([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    batch = type(batch)(batch.users, batch.history, torch.tensor([11, 12]))
    queries, positives, *_ = batch.training_pairs(model)
    interests = model.encode_users(batch)
    scores = torch.einsum("bkd,bd->bk", interests, model.encode_items(positives))
    expected = interests[torch.arange(2), scores.argmax(1)]
    assert torch.equal(queries, expected) and queries.shape == (2, 8)


def test_one_interest_trains_and_ranks_as_a_single_vector_tower(walk_prepared):
    from conftest import small_config
    from towerkit.runs import pipeline

    config = small_config(model={"name": "comirec_sa", "embedding_dim": 16, "interests": 1})
    outcome = pipeline.train(config, walk_prepared)
    _, test = pipeline.evaluators(config, walk_prepared)
    users = test.user_vectors(outcome.model)
    items = test.item_vectors(outcome.model)
    assert users.shape[1] == 1
    assert test.evaluate_vectors(users, items, Cosine(), interests=1) == pytest.approx(
        test.evaluate_vectors(users[:, 0], items, Cosine())
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("negatives", [{"kind": "full"}, {"kind": "mixed", "n": 8}])
def test_multi_interest_models_beat_popularity(name, negatives, walk_prepared):
    from conftest import small_config
    from towerkit.runs import pipeline

    model = {"name": name, "embedding_dim": 16, "interests": 3}
    outcome = pipeline.train(
        small_config(model=model, negatives=negatives, train={"epochs": 5, "lr": 0.01}),
        walk_prepared,
    )
    assert outcome.metrics["test"]["hr@10"] > 2 * outcome.popularity["hr@10"]


@pytest.mark.parametrize("name", ["comirec_sa", "youtube_dnn"])
def test_comirec_protocol_trains_on_training_users_only_and_beats_popularity(name, walk_prepared):
    """ComiRec's protocol end to end: held-out users, recall at 20, nothing masked."""
    from conftest import small_config
    from towerkit.data import Prepared, held_out_users
    from towerkit.runs import pipeline

    split = held_out_users(walk_prepared.split.sequences, valid=0.2, test=0.2, seed=0)
    prepared = Prepared(walk_prepared.encoded, split, walk_prepared.titles)
    model = {"name": name, "embedding_dim": 16}
    if name == "comirec_sa":
        model["interests"] = 3
    config = small_config(
        data={"split": {"kind": "held_out_users", "valid": 0.2, "test": 0.2}},
        model=model, train={"epochs": 5, "lr": 0.01},
        eval={"mask_seen": False, "ks": [10, 20]},
    )  # fmt: skip
    assert pipeline.make_split(config.data.split, split.sequences).held_out.tolist() == (
        split.held_out.tolist()
    )
    batches = pipeline.build_batches(config, prepared, pipeline.build_model(config, prepared))
    trained = set(np.asarray(batches.users).tolist())
    assert trained and not trained & set(np.flatnonzero(split.held_out).tolist())
    outcome = pipeline.train(config, prepared)
    test = outcome.metrics["test"]
    assert set(test) >= {"recall@20", "hr@20", "ndcg@20"}
    assert test["recall@20"] > 1.5 * outcome.popularity["recall@20"]  # 20 of only 60 items


def test_a_multi_interest_run_recommends_and_exports(offline_ml100k, tmp_path):
    import yaml

    from conftest import towerkit  # in this process: the command's own main()

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "ml-100k", "max_len": 20},
        "model": {"name": "mind", "embedding_dim": 16, "interests": 3},
        "temperature": {"value": 0.1},
        "train": {"epochs": 1, "batch_size": 512},
    }))  # fmt: skip
    run = tmp_path / "run"
    done = towerkit("-q", "train", str(config), "--out", str(run))
    assert done.returncode == 0, done.stderr
    recommended = towerkit("recommend", str(run), "--user", "1", "-k", "5")
    assert recommended.returncode == 0, recommended.stderr
    exported = towerkit("export", str(run), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["model"] == "mind" and manifest["onnx"]["parity"] <= 1e-5
