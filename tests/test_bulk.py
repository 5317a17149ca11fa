"""Recommendations for every user (`towerkit recommend --all-users`): the same lists as
`recommend` user by user, shards that concatenate to the whole job, a job stopped by SIGINT or a
full disk that goes on with no user twice or missing, and bad input as one line with nothing
written."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import synthetic_ml100k, towerkit
from towerkit.retrieval import Retriever
from towerkit.retrieval.bulk import UserShard, recommend_all
from towerkit.runs import pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small YouTubeDNN run on the offline ML-100K stand-in (943 users, 1,682 items)."""
    from conftest import small_config
    from towerkit.datasets import cache

    root = tmp_path_factory.mktemp("bulk")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWERKIT_HOME", str(root / "home"))
        cache.write(root / "home" / "datasets" / "ml-100k", synthetic_ml100k(), "synthetic")
        config = small_config(
            model={"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
            train={"epochs": 1, "batch_size": 1024},
        )
        return pipeline.train(config, run=root / "run").run.path


def one_by_one(retriever: Retriever, users, k: int, where=None) -> pd.DataFrame:
    rows = []
    for user in users:
        found = retriever.recommend([user], k, where=where)
        for rank, (item, score) in enumerate(zip(found.items[0], found.scores[0], strict=True)):
            if item is not None:
                rows.append((user, rank + 1, item, score))
    frame = pd.DataFrame(rows, columns=["user", "rank", "item", "score"])
    return frame.astype({"rank": "int32"})  # the file's type


def test_every_user_gets_what_recommend_gives_them(run, tmp_path):
    done = towerkit("recommend", str(run), "--all-users", "--out", str(tmp_path / "recs.parquet"),
                    "-k", "20", "--batch-users", "300", "--vectors")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "18,860 recommendations written" in done.stdout
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    assert recs.columns.tolist() == ["user", "rank", "item", "score"]
    retriever = Retriever.from_run(run)
    users = retriever.user_vocab.raw  # every user, in id order
    expected = one_by_one(retriever, users, 20)
    pd.testing.assert_frame_equal(
        recs[["user", "rank", "item"]], expected[["user", "rank", "item"]]
    )
    assert np.allclose(recs["score"], expected["score"], atol=1e-6)
    vectors = pq.read_table(tmp_path / "recs.vectors.parquet")
    assert vectors.column("user").to_pylist() == list(users)
    ids = retriever.encode_users(list(users))
    assert np.allclose(np.stack(vectors.column("vector").to_numpy(zero_copy_only=False)),
                       retriever.user_queries(ids), atol=1e-6)  # fmt: skip
    assert not list(tmp_path.glob(".*"))  # no work folder left


def test_a_users_file_and_a_filter(run, tmp_path):
    retriever = Retriever.from_run(run)
    label = pd.read_parquet(run / "items.parquet")["label"].value_counts().index[0]
    where = f'label == "{label}"'
    chosen = list(retriever.user_vocab.raw[[40, 3, 700, 12]])
    (tmp_path / "users.txt").write_text("user\n" + "\n".join(map(str, chosen)) + "\n")
    done = towerkit("recommend", str(run), "--all-users", "--users", str(tmp_path / "users.txt"),
                    "--filter", where, "--out", str(tmp_path / "r.parquet"), "-k", "7")  # fmt: skip
    assert done.returncode == 0, done.stderr
    recs = pd.read_parquet(tmp_path / "r.parquet")
    expected = one_by_one(retriever, chosen, 7, where=where)
    pd.testing.assert_frame_equal(
        recs[["user", "rank", "item"]], expected[["user", "rank", "item"]]
    )
    items = pd.read_parquet(run / "items.parquet").set_index("item")
    assert (items.loc[recs["item"], "label"] == label).all()


def test_faiss_hnsw_gives_what_the_same_index_gives_one_by_one(run, tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "hnsw.parquet"
    done = towerkit("recommend", str(run), "--all-users", "--index", "faiss-hnsw",
                    "--out", str(out), "-k", "10")  # fmt: skip
    assert done.returncode == 0, done.stderr
    retriever = Retriever.from_run(run, index="faiss-hnsw")
    users = retriever.user_vocab.raw[:50]
    expected = one_by_one(retriever, users, 10)
    got = pd.read_parquet(out).iloc[: len(expected)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["user", "rank", "item"]], expected[["user", "rank", "item"]])


def test_shards_concatenate_to_the_whole_job(run, tmp_path):
    retriever = Retriever.from_run(run)
    whole = recommend_all(retriever, tmp_path / "whole.parquet", k=5, progress=False)
    shards = [
        recommend_all(retriever, tmp_path / f"s{i}.parquet", k=5, shard=UserShard(i, 3),
                      batch=100, progress=False)
        for i in range(3)
    ]  # fmt: skip
    joined = pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True)
    pd.testing.assert_frame_equal(joined, pd.read_parquet(whole))
    assert [pq.ParquetFile(s).metadata.num_rows for s in shards] == [1570, 1570, 1575]


def test_a_job_stopped_by_sigint_goes_on_with_no_user_twice_or_missing(run, tmp_path):
    out = tmp_path / "recs.parquet"
    work = tmp_path / ".recs.parquet.parts"
    args = ["recommend", str(run), "--all-users", "--out", str(out), "-k", "5",
            "--batch-users", "1"]  # fmt: skip
    job = subprocess.Popen(
        [sys.executable, "-m", "towerkit", "-q", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob("part-*.parquet"))) < 20:
            assert time.monotonic() < deadline and job.poll() is None, job.stderr
            time.sleep(0.02)
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == 130, stderr
    assert "run the same command again to go on" in stderr and "Traceback" not in stderr
    assert not out.exists()
    kept = len(list(work.glob("part-*.parquet")))
    assert 20 <= kept < 943

    again = towerkit(*args)
    assert again.returncode == 0, again.stderr
    recs = pd.read_parquet(out)
    whole = recommend_all(Retriever.from_run(run), tmp_path / "whole.parquet", k=5, progress=False)
    pd.testing.assert_frame_equal(recs, pd.read_parquet(whole))
    assert recs.groupby("user", sort=False).size().eq(5).all() and recs["user"].nunique() == 943
    assert not work.exists()


def test_a_full_disk_keeps_the_finished_parts(run, tmp_path, monkeypatch):
    out = tmp_path / "recs.parquet"
    real, calls = pq.write_table, []

    def full_on_the_fourth(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_on_the_fourth)
    args = ("recommend", str(run), "--all-users", "--out", str(out), "--batch-users", "200")
    done = towerkit(*args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "No space left on device; the 600 users finished are kept in" in done.stderr
    assert not out.exists() and len(list(tmp_path.glob(".recs.parquet.parts/part-*"))) == 3
    monkeypatch.setattr(pq, "write_table", real)
    assert towerkit(*args).returncode == 0
    assert pd.read_parquet(out)["user"].nunique() == 943


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path):
    out = tmp_path / "r.parquet"
    (tmp_path / "unknown.txt").write_text("1\n987654\n")
    (tmp_path / "twice.txt").write_text("1\n2\n1\n")
    base = ("recommend", str(run))
    for args, message in [
        (("--all-users", "--users", str(tmp_path / "unknown.txt"), "--out", str(out)),
         "unknown user id(s) 987654"),
        (("--all-users", "--users", str(tmp_path / "twice.txt"), "--out", str(out)),
         "the users list repeats 1 user(s) (1)"),
        (("--all-users", "--users", str(tmp_path / "none.txt"), "--out", str(out)),
         "none.txt: no such file"),
        (("--all-users", "--out", str(out), "--shard", "3/3"), "give I/N with 0 <= I < N"),
        (("--all-users", "--out", str(out), "--filter", "genre == 1"), "unknown item attribute"),
        (("--all-users", "--out", str(tmp_path)), "is a directory"),
        (("--all-users",), "give --out FILE"),
        (("--user", "1", "--out", str(out)), "--out: for --all-users only"),
        (("--all-users", "--user", "1", "--out", str(out)), "drop --user"),
    ]:  # fmt: skip
        done = towerkit(*base, *args)
        assert done.returncode in (1, 2) and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["twice.txt", "unknown.txt"]


def test_a_stopped_job_is_not_mixed_with_other_arguments(run, tmp_path):
    work = tmp_path / ".r.parquet.parts"
    work.mkdir()
    (work / "job.json").write_text('{"format": 1, "k": 50}\n')
    done = towerkit("recommend", str(run), "--all-users", "--out", str(tmp_path / "r.parquet"))
    assert done.returncode == 1
    assert (
        "a job with other arguments stopped here (they differ in: batch, index, index_options, k,"
        in done.stderr
    )
    assert not (tmp_path / "r.parquet").exists()


def test_milvus_flat_with_a_filter_gives_the_exact_lists(run, tmp_path):
    """Through Milvus Lite (a temporary database; FLAT is exact search), with a filter that
    Milvus runs in the collection."""
    pytest.importorskip("milvus_lite")
    label = pd.read_parquet(run / "items.parquet")["label"].value_counts().index[0]
    where = ("--filter", f'label == "{label}"')
    common = ("recommend", str(run), "--all-users", "-k", "10", *where)
    exact = towerkit(*common, "--out", str(tmp_path / "exact.parquet"))
    milvus = towerkit(*common, "--out", str(tmp_path / "milvus.parquet"),
                      "--index", "milvus", "-o", "index_type=FLAT")  # fmt: skip
    assert exact.returncode == 0 and milvus.returncode == 0, milvus.stderr
    a, b = pd.read_parquet(tmp_path / "exact.parquet"), pd.read_parquet(tmp_path / "milvus.parquet")
    pd.testing.assert_frame_equal(a[["user", "rank", "item"]], b[["user", "rank", "item"]])
    assert np.allclose(a["score"], b["score"], atol=1e-5)
