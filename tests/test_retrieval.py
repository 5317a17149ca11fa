"""Retrieval from a trained run: Retriever API, `towerkit recommend`, evaluation via an index."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from towerkit import pipeline
from towerkit.config import config_from_dict
from towerkit.data.vocab import Vocab
from towerkit.retrieval import Retriever, parse_id_list

TINY = {
    "data": {"dataset": "ml-100k", "max_len": 20, "user_features": []},
    "model": {"embedding_dim": 16, "hidden": [32], "pooling": "recency"},
    "temperature": {"value": 0.1},
    "eval": {"index": "annoy", "index_options": {"n_trees": 10}},
    "train": {"epochs": 1, "batch_size": 512, "lr": 0.003, "progress": False},
}


def towerkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "towerkit.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch ML-100K run whose validation went through an Annoy index."""
    config = config_from_dict(TINY)
    prepared = pipeline.prepare(config.data, progress=False)
    outcome = pipeline.train(config, prepared)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    pipeline.save_run(outcome, prepared, out)
    return out, outcome, prepared


pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_validation_through_an_index_reports_its_recall(run):
    _, outcome, _ = run
    valid = outcome.result.epochs[0].valid
    assert valid["index_recall@10"] >= 0.95
    assert valid["index_build_s"] > 0 and valid["index_qps"] > 0
    # The test stage stays exact.
    assert "index_recall@10" not in outcome.metrics["test"]


def test_recommend_excludes_seen_items_and_matches_exact_search(run):
    out, _, prepared = run
    exact = Retriever.from_run(out)
    annoy = Retriever.from_run(out, "annoy", n_trees=20, search_k=100_000)
    raw_users = prepared.encoded.user_vocab.raw[:50]
    a, b = exact.recommend(raw_users, k=10), annoy.recommend(raw_users, k=10)
    assert a.items.shape == a.scores.shape == a.titles.shape == (50, 10)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert (np.diff(a.scores, axis=1) <= 1e-6).all()
    sequences = prepared.split.sequences
    for row, raw in enumerate(raw_users):
        user = prepared.encoded.user_vocab.encode([raw])[0]
        seen = set(prepared.encoded.item_vocab.decode(sequences.of(user)).tolist())
        assert not seen & set(a.items[row].tolist())
    # ML-100K titles come with the items: "name (year)".
    assert all(t.endswith(")") for t in a.titles[0])
    # Without exclusion some seen items come back.
    unmasked = exact.recommend(raw_users, k=10, exclude_seen=False)
    assert any(set(unmasked.items[r]) != set(a.items[r]) for r in range(50))


def test_a_history_gives_what_the_same_known_user_gets(run):
    # The tiny config has no user features, so a user is exactly their history.
    out, _, prepared = run
    retriever = Retriever.from_run(out)
    raw_user = prepared.encoded.user_vocab.raw[3]
    user = prepared.encoded.user_vocab.encode([raw_user])[0]
    history = prepared.encoded.item_vocab.decode(prepared.split.sequences.of(user)).tolist()
    known = retriever.recommend([raw_user], k=10)
    new = retriever.recommend_history([history], k=10)
    np.testing.assert_array_equal(known.items, new.items)
    np.testing.assert_allclose(known.scores, new.scores, rtol=1e-6)
    # String ids from a command line are read as the vocab's integer ids.
    np.testing.assert_array_equal(retriever.recommend([str(raw_user)], k=10).items, known.items)


def test_unknown_ids_are_named(run):
    out, _, _ = run
    retriever = Retriever.from_run(out)
    with pytest.raises(KeyError, match=r"unknown user id.*99999"):
        retriever.recommend([99999])
    with pytest.raises(KeyError, match="unknown user id 'abc'"):
        retriever.recommend(["abc"])
    with pytest.raises(KeyError, match=r"unknown item id.*123456"):
        retriever.recommend_history([[1, 123456]])


def test_parse_id_list_keeps_commas_inside_ids():
    vocab = Vocab(["Godfather, The (1972)", "Heat (1995)", "Toy Story (1995)"], name="item")
    assert parse_id_list(vocab, "Godfather, The (1972),Heat (1995)") == [
        "Godfather, The (1972)",
        "Heat (1995)",
    ]
    assert parse_id_list(vocab, "Heat (1995), Toy Story (1995)") == [
        "Heat (1995)",
        "Toy Story (1995)",
    ]
    with pytest.raises(KeyError, match="unknown item id 'Godfather'"):
        parse_id_list(vocab, "Godfather")
    assert parse_id_list(Vocab([10, 20, 30], name="item"), "30, 10") == [30, 10]


def test_cli_recommend_for_a_user_and_for_a_history(run):
    out, _, prepared = run
    raw_user = str(prepared.encoded.user_vocab.raw[0])
    done = towerkit("recommend", str(out), "--user", raw_user, "-k", "5", "--index", "annoy")
    assert done.returncode == 0, done.stderr
    assert f"user {raw_user}: top 5 (annoy)" in done.stdout and "title" in done.stdout
    items = prepared.encoded.item_vocab.raw[:3]
    done = towerkit("recommend", str(out), "--history", ",".join(map(str, items)), "-k", "3")
    assert done.returncode == 0, done.stderr
    assert "history of 3 item(s): top 3" in done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--user", "99999"], "error: unknown user id(s) 99999"),
        (["--history", "1,999999"], "error: unknown item id '999999'"),
        (["--user", "1", "--index", "annoy", "-o", "n_tres=3"], "unknown option(s) n_tres"),
        (["--user", "1", "-o", "oops"], "index option 'oops' is not KEY=VALUE"),
    ],
)
def test_cli_recommend_errors_are_one_line(run, args, message):
    out, _, _ = run
    done = towerkit("recommend", str(out), *args)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_cli_recommend_needs_a_user_or_a_history(run):
    out, _, _ = run
    done = towerkit("recommend", str(out))
    assert done.returncode != 0 and "either --user" in done.stderr


def test_cli_evaluate_through_an_index(run):
    out, _, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    done = towerkit("evaluate", str(out), "--index", "faiss-hnsw", "-o", "ef_search=64")
    assert done.returncode == 0, done.stderr
    assert "faiss-hnsw against exact search" in done.stdout
    assert "recall@10" in done.stdout and "queries/s" in done.stdout
    exact = towerkit("evaluate", str(out))
    assert f"{metrics['test']['hr@10']:.4f}" in exact.stdout
