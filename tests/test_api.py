"""towerkit from Python: the package's face trains a log held in memory into a run that beats
the popularity baseline, carries its log (so it evaluates and resumes without it), and
recommends, finds similar items, reports, exports and compares; bad input is one error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import towerkit
from conftest import ctrl_c_after_the_first_checkpoint, walk_log
from conftest import towerkit as cli
from towerkit.errors import TowerkitError
from towerkit.runs import RunDirError

TREE = {
    "data": {"max_len": 10},
    "model": {"name": "youtube_dnn", "embedding_dim": 16, "hidden": [32]},
    "eval": {"ks": [10]},
    "train": {"epochs": 3, "batch_size": 256, "monitor": "ndcg@10", "progress": False},
}


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    """A walk log with string ids, as a notebook builds one."""
    frame = walk_log(np.random.default_rng(3).integers(8, 25, 400), 60, seed=3).frame
    return pd.DataFrame({
        "user": "u" + frame["user"].astype(str),
        "item": "i" + frame["item"].astype(str),
        "timestamp": frame["timestamp"],
    })  # fmt: skip


@pytest.fixture(scope="module")
def run(log, tmp_path_factory) -> towerkit.Run:
    return towerkit.train(TREE, data=log, out=tmp_path_factory.mktemp("api") / "run")


def test_the_face_names_the_api_and_stays_light():
    assert {"train", "open_run", "resume", "compare", "Run", "load_config", "Config"} <= set(
        towerkit.__all__
    )
    code = "import sys, towerkit; print('torch' in sys.modules, 'pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_a_dataframe_trains_into_a_run_that_beats_popularity(run, log):
    test = run.metrics["test"]
    assert test["ndcg@10"] > run.metrics["popularity"]["ndcg@10"]
    assert run.config.model.name == "youtube_dnn" and run.config.data.dataset is None
    # the run carries its log, named relative to it and checked like its other files
    assert (run.path / "log.parquet").is_file()
    assert "log.parquet" in json.loads((run.path / "run.json").read_text())["files"]
    assert pd.read_parquet(run.path / "log.parquet").equals(log)
    # a pyarrow Table of the same log trains to the same metrics
    again = towerkit.train(TREE, data=pa.Table.from_pandas(log), out=run.path.parent / "table")
    assert again.metrics["test"] == test


def test_the_carried_log_evaluates_and_moves_with_the_run(run, tmp_path):
    moved = tmp_path / "moved"
    import shutil

    shutil.copytree(run.path, moved)
    done = cli("evaluate", str(moved))
    assert done.returncode == 0, done.stderr
    assert f"{run.metrics['test']['ndcg@10']:.4f}" in done.stdout


def test_a_run_recommends_finds_similar_items_reports_exports(run, tmp_path):
    top = run.recommend(["u1", "u2"], k=5)
    assert list(top.columns) == ["user", "rank", "item", "score"]
    assert top["user"].tolist() == ["u1"] * 5 + ["u2"] * 5 and top["rank"].tolist()[:5] == [
        1, 2, 3, 4, 5
    ]  # fmt: skip
    seen = set(run.retriever.history_of(["u1"])[0])
    assert not seen & set(top[top.user == "u1"]["item"])
    assert (np.diff(top[top.user == "u1"]["score"].to_numpy()) <= 0).all()
    new = run.recommend(history=["i1", "i2", "i3"], k=4)
    assert len(new) == 4 and not {"i1", "i2", "i3"} & set(new["item"])
    near = run.similar(["i1"], k=3)
    assert len(near) == 3 and "i1" not in set(near["item"])
    assert run.report(tmp_path / "r.html").stat().st_size > 10_000
    exported = run.export(tmp_path / "export")
    assert (exported / "manifest.json").is_file()
    reopened = towerkit.open_run(run.path)
    pd.testing.assert_frame_equal(reopened.recommend(["u1", "u2"], k=5), top)
    result = towerkit.compare(run, "popularity", resamples=200)
    assert result.differences[0].n == 400
    assert "youtube_dnn" in repr(run) and "ndcg" in repr(run)


def test_an_interrupted_run_resumes_from_its_carried_log(log, tmp_path):
    from towerkit.errors import RunInterrupted

    with ctrl_c_after_the_first_checkpoint(), pytest.raises(RunInterrupted):
        towerkit.train(TREE, data=log, out=tmp_path / "run")
    with pytest.raises(RunDirError, match="unfinished"):
        towerkit.open_run(tmp_path / "run")
    resumed = towerkit.resume(tmp_path / "run")
    straight = towerkit.train(TREE, data=log, out=tmp_path / "straight")
    assert resumed.metrics["test"] == straight.metrics["test"]


def test_bad_input_is_one_error():
    with pytest.raises(TowerkitError, match="a pandas DataFrame, a pyarrow Table or a path"):
        towerkit.train(TREE, data=[1, 2, 3])
    with pytest.raises(TowerkitError, match=r"train\.epochs"):
        towerkit.load_config({"train": {"epochs": 0}})
    with pytest.raises(RunDirError, match="not a run directory"):
        towerkit.open_run("/nonexistent/run")


def test_recommend_takes_users_or_a_history(run):
    with pytest.raises(TowerkitError, match=r"give users .* or history"):
        run.recommend()
    with pytest.raises(TowerkitError, match="not both"):
        run.recommend(["u1"], history=["i1"])
    with pytest.raises(KeyError, match="u999"):
        run.recommend(["u999"])


def test_the_readme_python_example_runs(offline_ml100k, tmp_path, monkeypatch, capsys):
    """The README's Python example, as written, on ML-100K (here the offline synthetic cache):
    it trains, prints the metrics and recommendations, and writes the report."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- python-example -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "ndcg@10" in printed and "rank" in printed and "score" in printed
    assert (tmp_path / "runs" / "ml100k-ytdnn.html").stat().st_size > 10_000
    run = towerkit.open_run(tmp_path / "runs" / "ml100k-ytdnn")
    assert run.metrics["test"]["ndcg@10"] > run.metrics["popularity"]["ndcg@10"]


def test_the_readme_is_short_and_its_links_lead_into_the_site():
    """The README: the two commands, what towerkit is, the examples, the headline results and
    links into docs/ (each to a page that exists); at most about 10 KB."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert len(readme.encode()) <= 10_240
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert len(links) >= 12 and all((root / link).is_file() for link in links), links
    site = (root / "mkdocs.yml").read_text()
    pages = {p.relative_to(root / "docs").as_posix() for p in (root / "docs").rglob("*.md")}
    assert all(page in site for page in pages), "a page the site's nav leaves out"


def test_the_api_reference_lists_every_public_name():
    from pathlib import Path

    reference = (Path(__file__).parent.parent / "docs" / "reference.md").read_text()
    for name in towerkit.__all__:
        if name != "__version__":
            assert f"- {name}\n" in reference or f".{name}\n" in reference, name


def test_an_old_module_of_an_api_name_does_not_hide_it():
    """towerkit.compare was a module (moved to towerkit.reports.compare, still importable by
    its old name); importing it must not replace the function towerkit.compare."""
    import importlib
    import warnings

    from towerkit import api

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("towerkit.compare")
    assert old.__name__ == "towerkit.reports.compare" and hasattr(old, "compare_runs")
    assert towerkit.compare is api.compare
