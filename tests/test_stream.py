"""The out-of-core path (issue 14): record batches to CSR, the same prepared data as the
in-memory path bit for bit, and the same clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from towerkit.config import config_from_dict
from towerkit.data import stream
from towerkit.errors import DataError
from towerkit.runs import pipeline, preparation


def prepared_both_ways(monkeypatch, data: dict, rows: int = 1 << 20):
    """The prepared data of ``data`` streamed (in record batches of ``rows``) and in memory."""
    config = config_from_dict({"data": data})
    assert stream.streamable(config.data) is None
    monkeypatch.setattr(stream, "BATCH_ROWS", rows)
    streamed = preparation._prepare_streamed(config.data, progress=False)  # no fallback
    with monkeypatch.context() as patch:
        patch.setattr(stream, "streamable", lambda data: "forced")
        in_memory = pipeline.prepare(config.data, progress=False)
    return streamed, in_memory


def assert_same(a, b) -> None:
    assert a.fingerprint == b.fingerprint
    assert np.array_equal(a.encoded.user_vocab.raw, b.encoded.user_vocab.raw)
    assert np.array_equal(a.encoded.item_vocab.raw, b.encoded.item_vocab.raw)
    assert a.summary() == b.summary()


def messy_log(n: int = 5_000, seed: int = 0) -> pd.DataFrame:
    """Ties in time, users' rows out of time order in the file, ids in any order."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user": rng.integers(0, 300, n) * 7 + 1,
            "item": rng.integers(0, 200, n) * 3,
            "timestamp": 1_600_000_000 + rng.integers(0, 2_000, n),  # many ties
        }
    )


@pytest.mark.parametrize("rows", [1 << 20, 333])  # one batch; many batches and merges
def test_parquet_shards_stream_to_the_in_memory_result(monkeypatch, tmp_path, rows):
    log = messy_log()
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, begin in enumerate(range(0, len(log), 1250)):
        part = log.iloc[begin : begin + 1250]
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                       shards / f"part-{i}.parquet")  # fmt: skip
    streamed, in_memory = prepared_both_ways(monkeypatch, {"path": str(shards)}, rows)
    assert_same(streamed, in_memory)
    assert len(streamed.encoded) == len(log)


def test_a_csv_with_text_ids_streams_to_the_in_memory_result(monkeypatch, tmp_path):
    log = messy_log(2_000, seed=1).astype({"item": str})
    log["user"] = "u" + log["user"].astype(str)
    log.loc[::7, "item"] = "0" + log.loc[::7, "item"]  # "042" stays apart from "42"
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    streamed, in_memory = prepared_both_ways(monkeypatch, {"path": str(path)}, rows=500)
    assert_same(streamed, in_memory)
    assert streamed.encoded.user_vocab.raw.dtype == object
    assert "042" in set(streamed.encoded.item_vocab.raw) and "42" in set(
        streamed.encoded.item_vocab.raw
    )


def test_integer_text_ids_become_integers_as_in_memory(monkeypatch, tmp_path):
    path = tmp_path / "log.csv"
    messy_log(1_000, seed=2).to_csv(path, index=False)
    streamed, in_memory = prepared_both_ways(monkeypatch, {"path": str(path)}, rows=300)
    assert_same(streamed, in_memory)
    assert streamed.encoded.item_vocab.raw.dtype == np.int64


def test_a_log_without_time_is_in_file_order(monkeypatch, tmp_path):
    path = tmp_path / "log.parquet"
    messy_log(1_000, seed=3).drop(columns="timestamp").to_parquet(path)
    streamed, in_memory = prepared_both_ways(
        monkeypatch, {"path": str(path), "columns": {"timestamp": None}}, rows=100
    )
    assert_same(streamed, in_memory)


def test_side_tables_and_titles_come_along(monkeypatch, tmp_path):
    log = messy_log(2_000, seed=4)
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    items = pd.DataFrame({"item": np.arange(0, 600, 3), "genre": ["a", "b"] * 100,
                          "name": [f"film {i}" for i in range(200)]})  # fmt: skip
    items.to_csv(tmp_path / "items.csv", index=False)
    data = {
        "path": str(path),
        "items": {"path": str(tmp_path / "items.csv"), "key": "item", "title": "name",
                  "features": {"genre": "categorical"}},
    }  # fmt: skip
    streamed, in_memory = prepared_both_ways(monkeypatch, data, rows=400)
    assert_same(streamed, in_memory)
    assert np.array_equal(streamed.titles, in_memory.titles)
    assert "genre" in streamed.encoded.item_features.values


def test_what_only_the_in_memory_reader_handles_goes_there(tmp_path):
    path = tmp_path / "log.parquet"
    messy_log(500).assign(rating=4.0).to_parquet(path)
    config = config_from_dict({"data": {"path": str(path), "columns": {"rating": "rating"}}})
    assert stream.streamable(config.data) == "a rating or weight column"
    config = config_from_dict({"data": {"path": str(path), "min_user_interactions": 2}})
    assert "filters" in stream.streamable(config.data)
    # Fractional times are only found while reading: the in-memory reader takes over.
    log = messy_log(500).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"] * 1.5, unit="s"))
    log.to_parquet(path)
    prepared = pipeline.prepare(
        config_from_dict({"data": {"path": str(path)}}).data, progress=False
    )
    assert len(prepared.encoded) == 500


def test_bad_input_is_one_clear_error(tmp_path):
    path = tmp_path / "log.parquet"
    log = messy_log(500)
    log.loc[321, "item"] = None
    log.astype({"item": "Int64"}).to_parquet(path)
    data = config_from_dict({"data": {"path": str(path)}}).data
    with pytest.raises(DataError, match=r"row 322: missing value in column 'item'"):
        stream.stream_sequences(path, progress=False)
    with pytest.raises(DataError, match="no user column 'uid'"):
        stream.stream_sequences(path, user="uid", progress=False)
    messy_log(10).iloc[:0].to_parquet(path)
    with pytest.raises(DataError, match="no data rows"):
        pipeline.prepare(data, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"without \.parquet files"):
        stream.stream_sequences(tmp_path / "empty", progress=False)


def test_text_ids_follow_the_in_memory_readers_rule(monkeypatch, tmp_path):
    """ "12.0" is the integer 12 there (not a string, as a digits-only rule would keep it); a log
    that spells one integer two ways ("12" and "12.0") goes to the in-memory reader."""
    log = messy_log(1_000, seed=5).astype({"item": str})
    log["item"] = log["item"] + ".0"
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    streamed, in_memory = prepared_both_ways(monkeypatch, {"path": str(path)}, rows=300)
    assert_same(streamed, in_memory)
    assert streamed.encoded.item_vocab.raw.dtype == np.int64
    log.loc[7, "item"] = log.loc[8, "item"].removesuffix(".0")
    log.to_parquet(path)
    with pytest.raises(stream.NotStreamable, match="spell one integer two ways"):
        stream.stream_sequences(path, progress=False)
    config = config_from_dict({"data": {"path": str(path)}})
    assert len(pipeline.prepare(config.data, progress=False).encoded) == 1_000


def test_text_spelled_missing_is_missing_as_in_memory(tmp_path):
    log = messy_log(500).astype({"user": str})
    log.loc[99, "user"] = " NaN "
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    with pytest.raises(DataError, match=r"row 100: missing value in column 'user'"):
        stream.stream_sequences(path, progress=False)


def write_shards(directory, log: pd.DataFrame, parts: int = 4) -> list:
    directory.mkdir()
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(log)), parts)):
        paths.append(directory / f"part-{i}.parquet")
        pq.write_table(pa.Table.from_pandas(log.iloc[part], preserve_index=False), paths[-1])
    return paths


def test_empty_shards_and_empty_files_are_skipped_on_both_paths(monkeypatch, tmp_path, caplog):
    log = messy_log(2_000)
    whole = tmp_path / "whole"
    write_shards(whole, log)
    holey = tmp_path / "holey"
    write_shards(holey, log)
    pq.write_table(pa.Table.from_pandas(log.iloc[:0], preserve_index=False),
                   holey / "part-1b.parquet")  # fmt: skip
    (holey / "part-2b.parquet").touch()  # a writer that died before its first byte
    with caplog.at_level("WARNING", logger="towerkit.data.readers"):
        streamed, in_memory = prepared_both_ways(monkeypatch, {"path": str(holey)}, rows=333)
    assert_same(streamed, in_memory)
    reference, _ = prepared_both_ways(monkeypatch, {"path": str(whole)})
    assert_same(streamed, reference)
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert f"{holey / 'part-1b.parquet'}: a shard of zero rows, skipped" in warned
    assert f"{holey / 'part-2b.parquet'}: an empty file, skipped" in warned


def test_a_shard_with_other_columns_or_not_parquet_is_named_on_both_paths(monkeypatch, tmp_path):
    log = messy_log(1_000)
    shards = tmp_path / "shards"
    paths = write_shards(shards, log)
    renamed = (
        log.iloc[:10]
        .rename(columns={"item": "item_id"})
        .assign(item_id=lambda f: f.item_id.astype(str))
    )
    pq.write_table(pa.Table.from_pandas(renamed, preserve_index=False), paths[2])
    data = config_from_dict({"data": {"path": str(shards)}}).data
    expected = rf"{paths[2]}: its columns differ from those of {paths[0]} \(no item; also item_id\)"
    with pytest.raises(DataError, match=expected):
        preparation._prepare_streamed(data, progress=False)
    with monkeypatch.context() as patch, pytest.raises(DataError, match=expected):
        patch.setattr(stream, "streamable", lambda data: "forced")
        pipeline.prepare(data, progress=False)

    retyped = log.iloc[:10].astype({"timestamp": "float64"})
    pq.write_table(pa.Table.from_pandas(retyped, preserve_index=False), paths[2])
    with pytest.raises(DataError, match="timestamp is double, not int64"):
        pipeline.prepare(data, progress=False)

    # the same columns in another order are the same log
    pq.write_table(pa.Table.from_pandas(log.iloc[:10][["timestamp", "item", "user"]],
                                        preserve_index=False), paths[2])  # fmt: skip
    streamed, in_memory = prepared_both_ways(monkeypatch, {"path": str(shards)})
    assert_same(streamed, in_memory)
    assert len(streamed.encoded) == 760

    paths[2].write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"{paths[2]}: not a readable Parquet file"):
        pipeline.prepare(data, progress=False)


def test_a_directory_of_empty_shards_says_there_are_no_rows(tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, messy_log(10).iloc[:0], parts=2)
    data = config_from_dict({"data": {"path": str(shards)}}).data
    with pytest.raises(DataError, match=r"no data rows \(every Parquet file in it is empty\)"):
        pipeline.prepare(data, progress=False)


@pytest.mark.parametrize("column", ["user", "item"])
def test_a_parquet_log_with_nested_ids_is_one_line_on_both_paths(tmp_path, column):
    """A list column where ids go: refused naming the column, by the out-of-core stream and by
    the in-memory reader (``data inspect``) alike, never an Arrow cast error."""
    from towerkit.data import read_interactions

    values = {"user": [1, 1, 2, 2], "item": [5, 6, 5, 6], "timestamp": [1, 2, 3, 4]}
    values[column] = [[v] for v in values[column]]
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table(values), path)
    with pytest.raises(DataError, match=rf"the {column} column '{column}' holds list"):
        stream.stream_sequences(path, progress=False)
    with pytest.raises(DataError, match=rf"row 1: the {column} column '{column}' holds"):
        read_interactions(path)
