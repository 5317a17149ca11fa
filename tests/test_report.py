"""Issue 24: per-user outcomes, the report page, the served report and `towerkit compare`.

- outcomes: target ranks on a handmade ranking, per-user metrics that average to the
  evaluator's, curves at every K, buckets, Gini and popularity tiers by hand;
- the paired bootstrap against a slow reference, the paired t-test against a hand computation;
- a run keeps outcomes that give its metrics.json; the report of two runs overlays them; a real
  Chromium opens it with the network cut (no console error, every chart drawn, titles on hover);
- bad input: an unfinished run, a missing or damaged file, runs of different data: one line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import CHROMIUM, launch_chromium, prepare_log, small_config, towerkit, walk_log
from towerkit.data import Prepared
from towerkit.evaluation import ranking_metrics
from towerkit.evaluation.outcomes import (
    Outcomes,
    bootstrap_intervals,
    gini,
    paired_p_value,
    popularity_percentiles,
    popularity_tiers,
    quantile_buckets,
    target_ranks,
)
from towerkit.reports import ReportError, RunView, project, report_data, write_report
from towerkit.reports.compare import compare_runs
from towerkit.runs import pipeline
from towerkit.runs.preparation import item_labels

# --------------------------------------------------------------------------------------------
# Outcomes by hand
# --------------------------------------------------------------------------------------------


def test_target_ranks_on_a_handmade_ranking():
    ids = np.array([[3, 1, 2], [2, 3, 1]])
    # user 0: targets 1 (2nd) and 5 (not ranked); user 1: target 1 (3rd)
    ranks = target_ranks(ids, np.array([0, 2, 3]), np.array([1, 5, 1]))
    assert ranks.tolist() == [2, 0, 3]


def random_outcomes(seed: int = 0, n_users: int = 300, n_items: int = 60, depth: int = 40):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.permutation(n_items)[:depth] + 1 for _ in range(n_users)])
    n_targets = rng.integers(1, 4, n_users)
    offsets = np.concatenate([[0], np.cumsum(n_targets)])
    targets = rng.integers(1, n_items + 1, offsets[-1])
    targets[1] = targets[0] if n_targets[0] > 1 else targets[1]  # a target listed twice
    ranks = target_ranks(ids, offsets, targets, chunk=7)
    outcomes = Outcomes(
        users=np.arange(1, n_users + 1), history=rng.integers(1, 50, n_users),
        target_offsets=offsets, targets=targets, ranks=ranks, popularity_ranks=ranks,
        top=ids[:, :10], depth=depth, n_items=n_items,
        item_counts=np.concatenate([[0], rng.integers(0, 100, n_items)]),
    )  # fmt: skip
    return outcomes, ids


@pytest.mark.parametrize("seed", [0, 1])
def test_per_user_metrics_average_to_the_evaluators_metrics(seed):
    outcomes, ids = random_outcomes(seed)
    ks = (1, 5, 10, 40)
    expected = ranking_metrics(ids, outcomes.target_offsets, outcomes.targets, 60, ks)
    for k in ks:
        for metric in ("hr", "ndcg", "recall", "mrr", "precision"):
            ours = outcomes.per_user(metric, k).mean()
            assert ours == pytest.approx(expected[f"{metric}@{k}"], abs=1e-12), (metric, k)
    curve = outcomes.curve("ndcg", 40)
    assert len(curve) == 40 and curve[9] == pytest.approx(expected["ndcg@10"], abs=1e-12)
    with pytest.raises(ValueError, match="ranks up to 40"):
        outcomes.per_user("hr", 41)


def test_outcomes_survive_their_parquet_file(tmp_path):
    outcomes, _ = random_outcomes()
    pq.write_table(outcomes.to_table(), tmp_path / "o.parquet")
    back = Outcomes.read(tmp_path / "o.parquet")
    for name in ("users", "history", "target_offsets", "targets", "ranks", "top", "item_counts"):
        assert np.array_equal(getattr(back, name), getattr(outcomes, name)), name
    assert (back.depth, back.n_items) == (40, 60)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(ValueError, match=r"bad\.parquet: not a readable outcomes table"):
        Outcomes.read(tmp_path / "bad.parquet")


def test_tiers_gini_percentiles_and_buckets_by_hand():
    # 100 interactions: item 1 holds the first half (head), item 2 starts at 50% (torso),
    # items 3, 4, 5 start at 70%, 85% and 95% (tail)
    counts = np.array([0, 50, 20, 15, 10, 5])
    assert popularity_tiers(counts).tolist() == [2, 0, 1, 2, 2, 2]
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)  # (2*4 - 4 - 1) * 4 / 16
    assert popularity_percentiles(np.array([0, 5, 1, 5, 3])).tolist() == [0, 87.5, 25, 87.5, 50]
    bucket, labels = quantile_buckets(np.array([1, 2, 3, 4, 5, 6, 7, 8]), 4)
    assert labels == ["1-3", "4-4", "5-6", "7-8"] or len(labels) == 4
    assert np.bincount(bucket).sum() == 8 and bucket[0] == 0 and bucket[-1] == len(labels) - 1


def test_the_item_map_projects_with_pca():
    rng = np.random.default_rng(0)
    # two clusters along the first axis: PCA's first component separates them
    vectors = np.concatenate([rng.normal(0, 0.1, (40, 8)), rng.normal(0, 0.1, (40, 8))])
    vectors[40:, 0] += 3
    xy = project(vectors, "pca")
    assert xy.shape == (80, 2)
    side = np.sign(xy[:, 0])
    assert len(set(side[:40])) == len(set(side[40:])) == 1 and side[0] != side[40]
    with pytest.raises(ReportError, match="unknown projection 'tsne'"):
        project(vectors, "tsne")


def test_the_item_map_projects_with_umap(tmp_path):
    """UMAP through :func:`project`, in a process where numba compiles nothing: umap's first
    call in a fresh environment spends about three minutes compiling its kernels (once per
    installation), its interpreted kernels take seconds on 80 points, and the result is
    umap's either way."""
    pytest.importorskip("umap")  # the umap extra (in the test extra)
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(0, 0.1, (40, 8)), rng.normal(0, 0.1, (40, 8))])
    vectors[40:, 0] += 3
    np.save(tmp_path / "v.npy", vectors)
    code = (
        "import sys, numpy as np; from towerkit.reports.analysis import project; "
        "np.save(sys.argv[2], project(np.load(sys.argv[1]), 'umap'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "v.npy"), str(tmp_path / "xy.npy")],
        env={**os.environ, "NUMBA_DISABLE_JIT": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    xy = np.load(tmp_path / "xy.npy")
    assert xy.shape == (80, 2) and np.isfinite(xy).all()
    gap = np.linalg.norm(xy[:40].mean(0) - xy[40:].mean(0))
    spread = max(xy[:40].std(0).max(), xy[40:].std(0).max())
    assert gap > 3 * spread  # the two clusters stay apart


def test_item_labels_take_each_items_most_specific_value():
    from towerkit.data.vocab import Vocab

    items = pd.DataFrame({
        "item": [1, 2, 3, 4],
        "title": ["a", "b", "c", "d"],
        "genres": [["Drama", "War"], ["Drama"], ["Comedy", "Drama"], ["Comedy"]],
    })  # fmt: skip
    name, labels = item_labels(items, Vocab(np.array([4, 3, 1, 2])))
    assert name == "genres"
    # Drama is on 3 items, Comedy 2, War 1: the rarest of each item's genres
    assert labels.tolist() == ["", "Comedy", "Comedy", "War", "Drama"]


# --------------------------------------------------------------------------------------------
# The paired bootstrap and test
# --------------------------------------------------------------------------------------------


def slow_bootstrap(differences, resamples, seed, confidence=0.95):
    """One resample at a time, a Python mean per resample."""
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        means.append(sum(differences[i] for i in idx) / n)
    alpha = (1 - confidence) / 2
    return tuple(np.quantile(np.array(means), [alpha, 1 - alpha]))


def test_the_bootstrap_is_the_slow_reference_and_covers_the_mean():
    rng = np.random.default_rng(3)
    d = rng.choice([-1.0, 0.0, 0.0, 1.0], 57) + 0.1
    ours = bootstrap_intervals(d, resamples=300, seed=5, max_cells=57 * 7)  # blocks of 7
    assert ours == pytest.approx(slow_bootstrap(d, 300, 5), abs=1e-12)
    stacked_low, stacked_high = bootstrap_intervals(np.stack([d, 2 * d]), resamples=300, seed=5)
    assert (stacked_low[0], stacked_high[0]) == pytest.approx(ours, abs=1e-12)
    assert stacked_low[1] == pytest.approx(2 * ours[0]) and stacked_high[1] == pytest.approx(
        2 * ours[1]
    )
    assert ours[0] < d.mean() < ours[1]


def test_the_paired_t_test_by_hand():
    a, b = np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0])
    # t = 2.5 / (sd 1.29099 / 2) = 3.873 with 3 degrees of freedom: p = 0.0305
    assert paired_p_value(a, b) == pytest.approx(0.0305, abs=5e-4)
    assert paired_p_value(b, b) == 1.0


# --------------------------------------------------------------------------------------------
# Runs: their outcomes, the report, compare
# --------------------------------------------------------------------------------------------


def labelled(seed: int, n_users: int = 400, **features) -> Prepared:
    """A walk log whose items carry genres (the item map's colours) and titles."""
    lengths = np.random.default_rng(seed).integers(8, 30, n_users)
    log = walk_log(lengths, 60, seed=seed)
    prepared = prepare_log(log, **features)
    labels = item_labels(log.items, prepared.encoded.item_vocab)
    return Prepared(prepared.encoded, prepared.split, prepared.titles, labels)


@pytest.fixture(scope="module")
def data():
    return labelled(2), labelled(3), labelled(2, user_features=["gender", "age"])


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report-runs")
    out = {}
    for name, prepared, train, evaluation in [
        ("seed-0", data[0], {"seed": 0}, {}),
        ("seed-1", data[0], {"seed": 1}, {}),
        ("annoy", data[0], {"seed": 0}, {"index": "annoy", "index_options": {"n_trees": 2}}),
        ("other-data", data[1], {"seed": 0}, {}),
        ("with-features", data[2], {"seed": 0}, {}),
    ]:
        config = small_config(train={**train, "epochs": 3}, eval={"ks": [5, 10], **evaluation})
        out[name] = pipeline.train(config, prepared, run=root / name).run.path
    return out


def test_a_run_keeps_outcomes_that_give_its_metrics(runs):
    run = RunView.load(runs["seed-0"])
    metrics = run.metrics
    assert run.outcomes.depth == 60  # eval.depth 200, capped by the 60 items
    for stage, popularity in (("test", False), ("popularity", True)):
        for k in (5, 10):
            for metric in ("hr", "ndcg", "recall", "mrr"):
                ours = run.outcomes.per_user(metric, k, popularity=popularity).mean()
                assert ours == pytest.approx(metrics[stage][f"{metric}@{k}"], abs=1e-9)
    items = pq.read_table(runs["seed-0"] / "items.parquet")
    assert {"count", "label"} <= set(items.column_names)
    assert json.loads(items.schema.metadata[b"towerkit"])["label"] == "genres"
    assert items.column("count").to_numpy().sum() == run.outcomes.item_counts.sum()
    epochs = metrics["train"]["epochs"]
    assert all(e["lr"] == pytest.approx(0.01) and e["temperature"] == pytest.approx(0.1)
               for e in epochs)  # fmt: skip


def test_an_approximate_validation_index_reports_what_it_costs(runs):
    run = RunView.load(runs["annoy"])
    data = report_data([run], maps=False)
    assert data["sections"][-1]["title"] == "Approximate index"
    row = data["runs"][0]["ann"][-1]
    valid = run.metrics["valid"]
    assert row["k"] == 10 and row["index_recall"] == valid["index_recall@10"]
    assert row["hr_lost"] == pytest.approx(valid["exact_hr@10"] - valid["hr@10"])


def test_the_report_of_two_runs_overlays_them(runs, tmp_path):
    out = tmp_path / "report.html"
    data = write_report([runs["seed-0"], runs["seed-1"]], out)
    page = out.read_text()
    assert "Plotly" in page and "cdn" not in page.lower().split("<script>")[0]
    assert "<script src=" not in page  # everything embedded
    titles = [s["title"] for s in data["sections"]]
    assert titles == ["Training", "Metrics at every K", "Where it fails", "What it recommends",
                      "Item map"]  # fmt: skip
    charts = {c["id"]: c for s in data["sections"] for c in s["charts"]}
    hr_at_k = charts["at-k-hr"]["data"]
    assert [t["name"] for t in hr_at_k] == ["seed-0", "seed-1", "popularity"]
    assert len(hr_at_k[0]["x"]) == 60 and hr_at_k[0]["y"][-1] == pytest.approx(
        RunView.load(runs["seed-0"]).outcomes.per_user("hr", 60).mean()
    )
    loss = charts["train-loss"]["data"]
    assert {t["name"] for t in loss} >= {"seed-0 loss", "seed-1 loss"}
    stars = [t for t in loss if t["name"].startswith("best epoch")]
    assert len(stars) == 2 and all(t["marker"]["symbol"] == "star" for t in stars)
    assert {"item-map-0", "item-map-1", "by-activity", "by-popularity"} <= set(charts)
    legend = {t["name"] for t in charts["item-map-0"]["data"]}
    assert legend <= {"Drama", "Comedy", "Action"} and len(legend) >= 2
    stats = data["runs"][0]["recommended"]
    assert 0 < stats["coverage"] <= 1 and 0 <= stats["gini"] < 1
    assert data["runs"][0]["neighbours"][0]["item"].startswith("Film [")


@pytest.fixture
def broken(runs, tmp_path):
    def copy(how: str) -> Path:
        run = tmp_path / how
        shutil.copytree(runs["seed-0"], run)
        if how == "unfinished":
            state = json.loads((run / "run.json").read_text())
            (run / "run.json").write_text(json.dumps({**state, "status": "training"}))
        elif how == "no-outcomes":
            (run / "outcomes.parquet").unlink()
        elif how == "damaged-metrics":
            (run / "metrics.json").write_text("{not json")
        elif how == "damaged-items":
            (run / "items.parquet").write_bytes(b"PAR1 truncated")
        elif how in ("half-outcomes", "edited-outcomes"):  # rewritten, metadata and all
            table = pq.read_table(run / "outcomes.parquet")
            if how == "half-outcomes":
                table = table.slice(0, table.num_rows // 2)
            else:
                ranks = pa.array([[1] * len(r) for r in table.column("ranks").to_pylist()])
                table = table.set_column(table.schema.get_field_index("ranks"), "ranks", ranks)
            pq.write_table(table, run / "outcomes.parquet")
        elif how == "unrecorded-damage":  # a run written before run.json recorded its files
            state = json.loads((run / "run.json").read_text())
            del state["files"]
            (run / "run.json").write_text(json.dumps(state))
            (run / "items.parquet").write_bytes(b"PAR1 truncated")
        return run

    return copy


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("unfinished", "the run is unfinished .* towerkit train --resume"),
        ("no-outcomes", r"outcomes\.parquet is missing .* towerkit evaluate .* --save"),
        ("damaged-metrics", r"metrics\.json: damaged"),
        ("damaged-items", r"items\.parquet: not the file the run wrote \(its sha256 differs"),
        (
            "half-outcomes",
            r"outcomes\.parquet: 200 rows where the run wrote 400 \(cut short, "
            r"or replaced\); write it again with: towerkit evaluate .* --save",
        ),
        ("edited-outcomes", r"outcomes\.parquet: not the file the run wrote .* --save"),
        ("unrecorded-damage", r"items\.parquet: damaged"),
    ],
)
def test_a_report_of_a_broken_run_names_the_file(broken, tmp_path, how, message):
    run = broken(how)
    with pytest.raises(ReportError, match=message):
        write_report([run], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    done = towerkit("report", str(run), "--out", str(tmp_path / "r.html"))  # (in-process CLI)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "r.html").exists()


def test_compare_pairs_users_and_refuses_other_data(runs, tmp_path):
    same = compare_runs(runs["seed-0"], runs["seed-0"], resamples=200)
    assert all(d.mean == 0 and d.low == d.high == 0 and d.p_value == 1 for d in same.differences)
    # a model of the walks beats the popularity baseline by far: the interval excludes 0
    versus = compare_runs(runs["seed-0"], "popularity", resamples=500)
    hr = next(d for d in versus.differences if d.metric == "hr@10")
    assert hr.high < 0 and hr.p_value < 1e-6 and versus.b == "popularity (seed-0)"
    with pytest.raises(
        ReportError, match=r"seed-0 and .*other-data were trained on different data"
    ):
        compare_runs(runs["seed-0"], runs["other-data"])
    # the same log, a model that reads user features too: another fingerprint, the same test
    # users, histories and targets, so they pair
    features = compare_runs(runs["seed-0"], runs["with-features"], resamples=100)
    fingerprints = {RunView.load(runs[n]).fingerprint for n in ("seed-0", "with-features")}
    assert len(fingerprints) == 2 and features.users == 400 and len(features.differences) == 8
    done = towerkit("compare", str(runs["seed-0"]), str(runs["seed-1"]), "-k", "10",
                    "--out", str(tmp_path / "c.html"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hr@10" in done.stdout and "95% interval" in done.stdout
    assert "Plotly.newPlot('compare'" in (tmp_path / "c.html").read_text()
    refused = towerkit("compare", str(runs["seed-0"]), str(runs["other-data"]))
    assert refused.returncode == 1 and "different data" in refused.stderr
    assert str(runs["seed-0"]) in refused.stderr and str(runs["other-data"]) in refused.stderr


def test_the_served_model_carries_its_report(runs, tmp_path):
    from fastapi.testclient import TestClient

    from towerkit.retrieval.export import ExportDir, export_run
    from towerkit.serve.app import create_app

    export = export_run(runs["seed-0"], tmp_path / "export")
    assert ExportDir(export).report()["sections"][0]["title"] == "Training"
    with TestClient(create_app(export)) as client:
        page = client.get("/report")
        assert page.status_code == 200 and "report/plotly.js" in page.text
        assert "item-map-0" in page.text
        script = client.get("/report/plotly.js")
        assert script.status_code == 200 and "Plotly" in script.text[:5000]
        assert "report-frame" in client.get("/").text
    bare = tmp_path / "bare"
    shutil.copytree(runs["seed-1"], bare)
    (bare / "outcomes.parquet").unlink()
    with TestClient(create_app(export_run(bare, tmp_path / "bare-export"))) as client:
        missing = client.get("/report")
        assert missing.status_code == 404 and "no per-user outcomes" in missing.json()["detail"]


# --------------------------------------------------------------------------------------------
# A real browser, the network cut
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_report_opens_offline_in_a_real_browser(runs, tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    data = write_report([runs["seed-0"], runs["annoy"]], out)
    chart_ids = [c["id"] for s in data["sections"] for c in s["charts"]]
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(offline=True)  # the network cut
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length == {len(chart_ids)}"
            )
            for chart in chart_ids:
                drawn = page.evaluate(
                    """(id) => {
                        const gd = document.getElementById(id);
                        const points = gd.data.reduce((n, t) => n + (t.x || []).length, 0);
                        const marks = gd.querySelectorAll(
                            '.scatterlayer .point, .scatterlayer .js-line, .barlayer path').length;
                        return [points, marks];
                    }""",
                    chart,
                )
                assert drawn[0] > 0 and drawn[1] > 0, (chart, drawn)
            # hovering a point of the item map shows its title
            point = page.locator("#item-map-0 .scatterlayer .point").first
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector("#item-map-0 .hovertext", timeout=5000)
            hover = page.locator("#item-map-0 .hovertext").first.text_content()
            assert "Film [" in hover and "training interactions" in hover
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith("file:") for url in requests), requests


# --------------------------------------------------------------------------------------------
# Real ML-100K (fetched from the registry mirror)
# --------------------------------------------------------------------------------------------


@pytest.mark.network
@pytest.mark.slow
def test_two_seeds_on_ml100k_differ_by_noise_and_beat_popularity(home, tmp_path):
    from towerkit.config import load_config

    config = load_config(Path(__file__).parent.parent / "configs" / "ml-100k" / "youtube_dnn.yaml")
    config = config.on_machine(progress=False)  # 3 of its 5 epochs: past popularity already
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 3})})
    prepared = pipeline.prepare(config.data, progress=False)
    paths = []
    for seed in (0, 1):
        seeded = config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})
        paths.append(pipeline.train(seeded, prepared, run=tmp_path / f"s{seed}").run.path)
    seeds = compare_runs(paths[0], paths[1])
    for d in seeds.differences:
        if d.metric in ("hr@10", "ndcg@10"):
            assert d.low <= 0 <= d.high, d
    versus = compare_runs(paths[0], "popularity")
    for d in versus.differences:
        assert d.high < 0, d  # YouTubeDNN beats popularity on every metric: B - A < 0
    assert not math.isnan(seeds.differences[0].p_value)


@pytest.mark.parametrize("where", ["a folder", "a missing folder"])
def test_an_out_that_cannot_be_written_is_one_line_before_any_work(runs, tmp_path, where):
    """`report` and `compare` check --out first: one line naming it (never the hidden file a
    write would go through), exit 1, nothing computed or written."""

    out = tmp_path / "taken" if where == "a folder" else tmp_path / "no" / "such" / "r.html"
    if where == "a folder":
        out.mkdir()
    commands = [
        ("report", str(runs["seed-0"]), "--out", str(out)),
        ("compare", str(runs["seed-0"]), str(runs["seed-1"]), "--out", str(out)),
    ]
    for command in commands:
        done = towerkit(*command)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: "), lines
        assert ".part" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["taken"] if where == "a folder" else [])


def test_a_report_of_runs_tested_on_other_data_says_so(runs, tmp_path):
    """Overlaid as asked, but the page and the log say that their test metrics do not compare,
    where runs of one log (one with user features) pass without a word."""

    out = tmp_path / "r.html"
    done = towerkit("report", str(runs["seed-0"]), str(runs["other-data"]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "other-data tested on other users or targets than seed-0" in done.stderr
    assert "do not compare" in out.read_text()
    same = write_report([runs["seed-0"], runs["with-features"]], tmp_path / "s.html")
    assert same["warnings"] == []
