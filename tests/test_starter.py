"""The starter config ``data inspect --write-config`` proposes: its rules on the two tuned
regimes (ML-1M, the Amazon files), and in between."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from towerkit.config import load_config
from towerkit.config.starter import starter_config, starter_tree
from towerkit.data.inspect import QUANTILES, LogReport

CONFIGS = Path(__file__).parent.parent / "configs"


def shape(rows: int, users: int, items: int, p99: float, has_time: bool = True) -> LogReport:
    """A report with the sizes that matter (the numbers of `towerkit data inspect`)."""
    per_user = {q: p99 for q in QUANTILES}
    span = (pd.Timestamp("2000-01-01"), pd.Timestamp("2003-01-01")) if has_time else None
    return LogReport(rows=rows, users=users, items=items, per_user=per_user,
                     per_item={q: 1.0 for q in QUANTILES}, duplicate_rows=0, repeated_pairs=0,
                     short_users=0, time_span=span, ratings=None)  # fmt: skip


ML1M = shape(1_000_209, 6_040, 3_706, 907)
BEAUTY = shape(198_502, 22_363, 12_101, 43, has_time=False)


def model_and_training(config) -> dict:
    tree = config.model_dump(mode="json")
    tree["train"].pop("threads")  # a machine's setting
    return {key: tree[key] for key in ("model", "similarity", "temperature", "negatives",
                                       "train")} | {"max_len": tree["data"]["max_len"]}  # fmt: skip


def load_starter(report: LogReport, dataset: str, tmp_path: Path):
    path = tmp_path / f"{dataset}.yaml"
    path.write_text(starter_config(report, {"dataset": dataset}))
    return load_config(path)


def test_on_ml1m_the_starter_is_the_tuned_config(tmp_path):
    """ML-1M's shape (270 interactions per item, density 4.5%, p99 history 907) gives
    configs/ml-1m/sasrec.yaml's model and training, setting for setting."""
    starter = load_starter(ML1M, "ml-1m", tmp_path)
    tuned = load_config(CONFIGS / "ml-1m/sasrec.yaml")
    assert model_and_training(starter) == model_and_training(tuned)
    assert starter.data.user_features == [] and starter.data.item_features == []


def test_on_beauty_the_starter_is_the_tuned_config(tmp_path):
    """Beauty's shape (p99 history 43: the floor of 50; density 0.073%: sparse) gives
    configs/s3rec/sasrec.yaml, setting for setting."""
    starter = load_starter(BEAUTY, "amazon-beauty", tmp_path)
    tuned = load_config(CONFIGS / "s3rec/sasrec.yaml")
    assert model_and_training(starter) == model_and_training(tuned)


@pytest.mark.parametrize(
    ("report", "width", "dropout", "layers", "max_len", "epochs"),
    [
        (shape(52_551, 1_090, 3_646, 382), 64, 0.2, 3, 200, 50),  # LastFM: 14 per item, 1.3%
        (shape(100_000, 943, 1_682, 400), 64, 0.1, 3, 200, 50),  # ML-100K: 59 per item, 6.3%
        (shape(20_000_000, 130_000, 6_000, 300), 128, 0.15, 3, 200, 25),  # 3,333 per item, 2.6%
        (shape(2_000, 1_000, 2_900, 3), 32, 0.5, 2, 50, 50),  # 0.7 per item, 0.07%
        (shape(316_354, 30_431, 20_033, 54), 64, 0.5, 2, 54, 50),  # Yelp: p99 54
    ],
)
def test_the_rules_between_and_beyond_the_tuned_regimes(
    report, width, dropout, layers, max_len, epochs
):
    tree = starter_tree(report, {"dataset": "ml-1m"})
    m = tree["model"]
    assert (m["embedding_dim"], m["dropout"], m["n_layers"]) == (width, dropout, layers)
    assert (tree["data"]["max_len"], tree["train"]["epochs"]) == (max_len, epochs)
    assert ("filter_mix" in m) == (report.density < 0.01)
    assert ("exclude_seen" in tree["negatives"]) == (report.density >= 0.01)


def test_a_large_catalogue_samples_its_softmax():
    tree = starter_tree(shape(50_000_000, 20_000, 200_000, 80), {"dataset": "ml-1m"})  # 1.25%
    assert tree["negatives"] == {"kind": "sampled", "n": 512, "sampler": "popularity",
                                 "shared": True, "exclude_seen": "window"}  # fmt: skip
    sparse = starter_tree(shape(5_000_000, 1_000_000, 200_000, 80), {"dataset": "ml-1m"})
    assert "exclude_seen" not in sparse["negatives"]  # density 0.0025%


def test_the_header_says_why():
    text = starter_config(BEAUTY, {"dataset": "amazon-beauty"})
    assert "width 64 (16 interactions per item), dropout 0.5 (density 0.0734%)" in text
    assert "a history of 50 (99% of users)" in text and "no times" in text
    assert yaml.safe_load(text)["model"]["filter_mix"] == 0.7
