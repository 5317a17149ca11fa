"""`towerkit embed`: vectors for items a run never saw, from their side features (the item
tower on the unknown id's row and the features), and the refusals: an ID-only model, a missing
feature, an id the run knows (also spelled as another type), a repeated id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import item_feature_runs, towerkit
from towerkit.runs import RunDir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A DSSM reading the items' genres (multi-valued) and year (numeric), and a YouTubeDNN
    (ids only), on a walk log of 60 items."""
    return item_feature_runs(tmp_path_factory.mktemp("embed"), users=200, seed=2)


def test_a_new_item_is_the_tower_on_the_unknown_row_and_its_features(runs, tmp_path):
    new = pd.DataFrame({
        "item": [1001, 1002, 1003],
        "genres": [["Drama", "Comedy"], ["Action"], ["Western"]],  # Western: never seen
        "year": [1990, 1960, None],
    })  # fmt: skip
    new.to_parquet(tmp_path / "new.parquet")
    done = towerkit("embed", str(runs["dssm"]), "--items", str(tmp_path / "new.parquet"),
                    "--out", str(tmp_path / "v.parquet"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 item vector(s) written" in done.stdout
    assert "values training never saw count as missing (genres 1)" in done.stderr
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("item").to_pylist() == [1001, 1002, 1003]
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))

    run = RunDir(runs["dssm"])
    model = run.load_model().eval()
    side = run.item_features
    genres = side.vocabs["genres"]
    codes = np.zeros((3, side.values["genres"].shape[1]), dtype=np.int64)
    codes[0, :2] = genres.encode(["Drama", "Comedy"])
    codes[1, 0] = genres.encode(["Action"])[0]
    by_hand = {
        "genres": torch.from_numpy(codes),
        "year": torch.tensor([1990.0, 1960.0, 0.0]),
    }
    with torch.no_grad():
        ids = torch.zeros(3, dtype=torch.long)
        unknown_row = model.item_id(ids)
        assert not unknown_row.any()  # the unknown id's row: zeros
        expected = model.item_tower(torch.cat([unknown_row, model.item_side(ids, by_hand)], -1))
    assert np.allclose(vectors, expected.numpy(), atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])  # the features make the difference


def test_an_id_only_model_says_it_cannot(runs, tmp_path):
    pd.DataFrame({"item": [1001]}).to_csv(tmp_path / "new.csv", index=False)
    done = towerkit("embed", str(runs["youtube_dnn"]), "--items", str(tmp_path / "new.csv"),
                    "--out", str(tmp_path / "v.parquet"))  # fmt: skip
    assert done.returncode == 1
    assert "youtube_dnn: its item tower reads item ids only" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "v.parquet").exists()


@pytest.mark.parametrize(
    "rows, message",
    [
        ({"item": [1001], "genres": ["Drama"]}, "no column for the item feature(s) year"),
        ({"item": [5], "genres": ["Drama"], "year": [1990]},
         "1 item(s) the run knows already, such as 5:"),
        ({"item": ["5"], "genres": ["Drama"], "year": [1990]},
         "(spelled '5', the same id as the known 5)"),
        ({"item": [1001, 1001], "genres": ["Drama", "Drama"], "year": [1990, 1991]},
         "item 1001 is listed more than once"),
        ({"item": ["x1"], "genres": ["Drama"], "year": [1990]}, "item ids are integers"),
        ({"item": [1001], "genres": ["Drama"], "year": ["inf"]}, "not a finite number"),
    ],
)  # fmt: skip
def test_bad_items_are_one_line_and_nothing_is_written(runs, tmp_path, rows, message):
    pd.DataFrame(rows).to_parquet(tmp_path / "new.parquet")
    done = towerkit("embed", str(runs["dssm"]), "--items", str(tmp_path / "new.parquet"),
                    "--out", str(tmp_path / "v.parquet"))  # fmt: skip
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v.parquet").exists()
