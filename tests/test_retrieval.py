"""Retrieval from a trained run: the run directory alone, the Retriever API, `towerkit
recommend`, and validation through an index. Every run here trains offline on a synthetic log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import small_config, towerkit
from towerkit.data.vocab import Vocab
from towerkit.retrieval import Retriever, parse_id_list
from towerkit.runs import RunDir, RunDirError, pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory, walk_prepared):
    """A short run with user features whose validation went through an Annoy index."""
    config = small_config(
        eval={"index": "annoy", "index_options": {"n_trees": 10}}, train={"epochs": 4}
    )
    out = tmp_path_factory.mktemp("runs") / "tiny"
    outcome = pipeline.train(config, walk_prepared, run=out)
    return out, outcome, walk_prepared


def test_validation_through_an_index_reports_its_recall(run):
    _, outcome, _ = run
    valid = outcome.result.epochs[0].valid
    assert 0.9 <= valid["index_recall@10"] <= 1.0
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
        assert exact.history_of([raw])[0].tolist() == list(
            prepared.encoded.item_vocab.decode(sequences.of(user))
        )
    # The titles are the items' own.
    titles = dict(zip(prepared.encoded.item_vocab.raw, prepared.titles[1:], strict=True))
    assert [titles[i] for i in a.items[0]] == a.titles[0].tolist()
    # Without exclusion some seen items come back.
    unmasked = exact.recommend(raw_users, k=10, filter_seen=False)
    assert any(set(unmasked.items[r]) != set(a.items[r]) for r in range(50))


def test_a_history_with_features_gives_what_the_same_known_user_gets(run):
    out, _, prepared = run
    retriever = Retriever.from_run(out)
    raw_user = prepared.encoded.user_vocab.raw[3]
    history = retriever.history_of([raw_user])[0].tolist()
    user = prepared.encoded.user_features
    code = prepared.encoded.user_vocab.encode([raw_user])[0]
    features = {n: user.vocabs[n].decode([user.values[n][code]])[0] for n in user.values}
    known = retriever.recommend([raw_user], k=10)
    new = retriever.recommend_history([history], k=10, features=[features])
    np.testing.assert_array_equal(known.items, new.items)
    np.testing.assert_allclose(known.scores, new.scores, rtol=1e-6)
    # Without the features the same history is another (featureless) user.
    bare = retriever.recommend_history([history], k=10)
    assert not np.allclose(bare.scores, known.scores)
    # String ids from a command line are read as the vocab's integer ids.
    np.testing.assert_array_equal(retriever.recommend([str(raw_user)], k=10).items, known.items)


def test_unknown_ids_and_features_are_named(run):
    out, _, _ = run
    retriever = Retriever.from_run(out)
    with pytest.raises(KeyError, match=r"unknown user id.*99999"):
        retriever.recommend([99999])
    with pytest.raises(KeyError, match="unknown user id 'abc'"):
        retriever.recommend(["abc"])
    with pytest.raises(KeyError, match=r"unknown item id.*123456"):
        retriever.recommend_history([[1, 123456]])
    with pytest.raises(KeyError, match=r"unknown user feature\(s\) shoe_size; the model uses"):
        retriever.recommend_history([[1]], features=[{"shoe_size": 44}])
    with pytest.raises(KeyError, match="unknown value 'X' of user feature 'gender'; known: "):
        retriever.recommend_history([[1]], features=[{"gender": "X"}])


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


def test_a_copied_run_recommends_the_same_offline_with_an_empty_home(run, tmp_path):
    """The run directory is all a machine needs: no data set, no cache, no network."""
    out, _, prepared = run
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(out, copy)
    raw_user = str(prepared.encoded.user_vocab.raw[7])
    env = {**os.environ, "TOWERKIT_HOME": str(tmp_path / "empty-home")}
    here = towerkit("recommend", str(out), "--user", raw_user)
    there = towerkit("recommend", str(copy), "--user", raw_user, env=env, network=False)
    assert there.returncode == 0, there.stderr
    assert there.stdout.replace(str(copy), "") == here.stdout.replace(str(out), "")
    assert "Film [" in there.stdout  # titles (with brackets, escaped) come from the run
    assert not (tmp_path / "empty-home").exists()
    # Loading a run imports neither the pipeline nor the evaluator.
    code = (
        "import sys; from towerkit.retrieval import Retriever; "
        f"r = Retriever.from_run({str(copy)!r}); r.recommend([{raw_user}], k=3); "
        "print([m for m in ('towerkit.runs.pipeline', 'towerkit.evaluation.evaluator') "
        "if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_recommend_for_a_user_and_for_a_history(run):
    out, _, prepared = run
    raw_user = str(prepared.encoded.user_vocab.raw[0])
    done = towerkit("recommend", str(out), "--user", raw_user, "-k", "5", "--index", "annoy")
    assert done.returncode == 0, done.stderr
    assert f"user {raw_user}: top 5 (annoy)" in done.stdout and "title" in done.stdout
    items = prepared.encoded.item_vocab.raw[:3]
    history = ",".join(map(str, items))
    done = towerkit("recommend", str(out), "--history", history, "-k", "3", "-f", "gender=F")
    assert done.returncode == 0, done.stderr
    assert "history of 3 item(s): top 3" in done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--user", "99999"], "error: unknown user id(s) 99999"),
        (["--history", "1,999999"], "error: unknown item id '999999'"),
        (["--history", "1", "-f", "gender=Q"], "unknown value 'Q' of user feature 'gender'"),
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --user (one or more) or --history"),
        (["--user", "1", "--history", "1"], "either --user (one or more) or --history, not both"),
        (["--history", ""], "--history is empty"),
        (["--history", "  "], "--history is empty"),
    ],
)
def test_cli_recommend_needs_a_user_or_a_history(run, args, message):
    out, _, _ = run
    done = towerkit("recommend", str(out), *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_unfinished_and_missing_runs_are_refused_with_what_to_do(tmp_path, walk_prepared):
    config = small_config()
    unfinished = RunDir.create(tmp_path / "unfinished", config, walk_prepared)
    with pytest.raises(RunDirError, match=r"unfinished \(0 of 3 epochs trained\); resume it with"):
        Retriever.from_run(unfinished)
    with pytest.raises(RunDirError, match="not a run directory"):
        Retriever.from_run(tmp_path)
    done = towerkit("recommend", str(unfinished.path), "--user", "1")
    assert done.returncode == 1 and "towerkit train --resume" in done.stderr
    with pytest.raises(RunDirError, match="exists and is not empty"):
        RunDir.create(unfinished.path, config, walk_prepared)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]  # no staging left


def test_an_integer_id_past_int64_is_unknown_not_a_crash():
    """Schemathesis found it: {"item": -3956961010464917553152} overflowed the cast to int64."""
    from towerkit.retrieval import coerce_raw

    vocab = Vocab.from_values(np.array([3, 7, 11]), name="item")
    assert list(coerce_raw(vocab, ["7", 11])) == [7, 11]
    with pytest.raises(KeyError, match="unknown item id -3956961010464917553152"):
        coerce_raw(vocab, [-3956961010464917553152])
