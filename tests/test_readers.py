"""Readers: column mapping, formats, and one clear error per kind of bad input."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from towerkit.data import read_interactions, read_side_table
from towerkit.datasets import read_atomic, read_movielens_dat
from towerkit.errors import DataError


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_column_mapping(tmp_path):
    path = write(tmp_path / "log.csv", "uid,mid,stars,when\n1,7,4.5,100\n2,7,3,50\n1,8,5,200\n")
    frame = read_interactions(path, user="uid", item="mid", timestamp="when", rating="stars")
    assert list(frame.columns) == ["user", "item", "timestamp", "rating"]
    assert frame["user"].tolist() == [1, 2, 1]
    assert frame["item"].dtype == np.int64
    assert frame["timestamp"].tolist() == [100, 50, 200]
    assert frame["rating"].dtype == np.float32
    assert frame["rating"].tolist() == [4.5, 3.0, 5.0]


def test_tsv_string_ids_and_iso_dates(tmp_path):
    path = write(
        tmp_path / "log.tsv",
        "user\titem\ttimestamp\nu1\t007\t2000-01-01T00:00:10\nu2\t7\t2000-01-01 00:00:00+01:00\n",
    )
    frame = read_interactions(path)
    assert frame["user"].tolist() == ["u1", "u2"]
    # "007" and "7" are different ids: they stay strings rather than merge as integers.
    assert frame["item"].tolist() == ["007", "7"]
    assert frame["timestamp"].tolist() == [946684810, 946681200]


def test_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "u": [3, 4],
            "i": ["x", "y"],
            "t": pd.to_datetime(["2001-09-09 01:46:40", "1970-01-01 00:00:05"]),
        }
    ).to_parquet(path)
    frame = read_interactions(path, user="u", item="i", timestamp="t")
    assert frame["timestamp"].tolist() == [1_000_000_000, 5]
    assert frame["item"].tolist() == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("user,item,ts\n1,2,3\n", {}, r"log\.csv: no column 'timestamp' for the timestamp .*ts"),
        ("", {}, r"log\.csv: the file is empty"),
        ("user,item,timestamp\n", {}, r"log\.csv: the file has no data rows"),
        (
            "user,item,timestamp\n1,2,3\n1,3,yesterday\n",
            {},
            r"log\.csv: line 3: cannot parse timestamp .*'yesterday'",
        ),
        (
            "user,item,timestamp\n1,2,3\n1,3,4,5\n",
            {},
            r"log\.csv: line 3: 4 fields where the header has 3",
        ),
        (
            "user,item,timestamp\n1,2,3\n1,3\n",
            {},
            r"log\.csv: line 3: no value in column 'timestamp'",
        ),
        (
            "user,item,timestamp,r\n1,2,3,good\n",
            {"rating": "r"},
            r"log\.csv: line 2: rating 'good' in column 'r' is not a finite number",
        ),
    ],
    ids=["missing-column", "empty", "header-only", "timestamp", "ragged", "short-row", "rating"],
)
def test_bad_csv_gets_one_clear_error(tmp_path, content, kwargs, message):
    path = write(tmp_path / "log.csv", content)
    with pytest.raises(DataError, match=message):
        read_interactions(path, **kwargs)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user,item,timestamp\n1,2,3\n1,Mis\xe9rables,4\n")
    with pytest.raises(DataError, match=r"log\.csv: line 3: byte b'\\xe9' is not valid utf-8"):
        read_interactions(path)


def test_blank_lines_keep_line_numbers(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\n1,2,3\n\n1,3,oops\n")
    with pytest.raises(DataError, match="line 4"):
        read_interactions(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [  # a quoted title holding a line break: the bad row is on line 5 of the file, not 4
        ('user,item,timestamp,title\n1,2,5,"a\nb"\n3,4,6,c\n5,6,xx,d\n', "line 5: cannot parse"),
        ('user,item,timestamp,title\n1,2,5,"a\nb"\n\n3,4,6,c\n,6,7,d\n', "line 6: no value"),
        ('user,item,timestamp,title\n1,2,5,"a\r\nb"\n5,6,7,d,9\n', "line 4: 5 fields"),
        ('user,item,timestamp,title\n1,2,5,"a\nb"\n3,4,6,c\n5,6,7,"d\n', "line 5: a quoted field"),
    ],
)
def test_line_numbers_count_the_breaks_inside_quoted_fields(tmp_path, text, message):
    path = write(tmp_path / "log.csv", text)
    with pytest.raises(DataError, match=re.escape(f"log.csv: {message}")):
        read_interactions(path)


def test_a_separator_of_several_characters(tmp_path):
    path = write(tmp_path / "log.dat", "user::item::timestamp\n1::2::3\n1::3::4\n")
    assert read_interactions(path, sep="::")["item"].tolist() == [2, 3]
    path = write(tmp_path / "log.dat", "user::item::timestamp\n1::2::3\n\n1::3::4::5\n")
    with pytest.raises(DataError, match=re.escape("log.dat: line 4: 4 fields where the header")):
        read_interactions(path, sep="::")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "nope.csv")
    path = write(tmp_path / "log.txt", "user,item,timestamp\n1,2,3\n")
    with pytest.raises(DataError, match=r"cannot tell the format from the suffix '\.txt'"):
        read_interactions(path)
    assert len(read_interactions(path, sep=",")) == 1


def test_a_txt_file_of_sequences_is_recognised(tmp_path):
    """The SASRec and S3-Rec files (``Beauty.txt``: ``user item item ...``) need no
    ``--format``; a .txt log of one event per line still asks for its format."""
    path = write(tmp_path / "Beauty.txt", "1 5 6 7\n2 5 9\n3 8 6 5 4 10\n")
    log = read_interactions(path)
    assert log["user"].tolist() == [1] * 3 + [2] * 2 + [3] * 5
    assert log["item"].tolist() == [5, 6, 7, 5, 9, 8, 6, 5, 4, 10]
    assert log["timestamp"].is_monotonic_increasing  # the file order is the time order
    for text in ("1 5 100\n2 6 101\n3 7 102\n", "1 5\n", "1 5 6\n2 7;8\n"):
        events = write(tmp_path / "events.txt", text)
        with pytest.raises(DataError, match="cannot tell the format"):
            read_interactions(events)


def test_corrupt_parquet(tmp_path):
    path = write(tmp_path / "log.parquet", "this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_interactions(path)


def test_side_table_lists_and_duplicates(tmp_path):
    path = write(tmp_path / "items.csv", "id,genres,year\n1,Comedy|Drama,1995\n2,Horror,\n")
    table = read_side_table(path, key="id", rename_key="item", list_columns=["genres"])
    assert table["item"].tolist() == [1, 2]
    assert table["genres"].tolist() == [["Comedy", "Drama"], ["Horror"]]
    dup = write(tmp_path / "dup.csv", "id,year\n1,1995\n1,1996\n")
    with pytest.raises(DataError, match=re.escape("dup.csv: line 3: id 1 appears twice")):
        read_side_table(dup, key="id", rename_key="item")


def test_movielens_dat(tmp_path):
    ratings = tmp_path / "ratings.dat"
    ratings.write_bytes(b"1::1193::5::978300760\n2::661::3::978302109\n")
    frame = read_movielens_dat(ratings)
    assert frame.to_dict("list") == {
        "user": [1, 2],
        "item": [1193, 661],
        "rating": [5.0, 3.0],
        "timestamp": [978300760, 978302109],
    }
    movies = tmp_path / "movies.dat"
    text = "1::Misérables, Les (1995)::Drama|Musical\n2::Star Wars: Episode IV (1977)::Sci-Fi\n"
    movies.write_bytes(text.encode("latin-1"))
    frame = read_movielens_dat(movies)
    assert frame["title"].tolist() == ["Misérables, Les (1995)", "Star Wars: Episode IV (1977)"]
    assert frame["genres"].tolist() == [["Drama", "Musical"], ["Sci-Fi"]]
    bad = tmp_path / "users.dat"
    bad.write_bytes(b"1::F::1::10::48067\n2::M::x::16::70072\n")
    with pytest.raises(DataError, match=r"users\.dat: line 2: age 'x' is not an integer"):
        read_movielens_dat(bad)
    ragged = tmp_path / "more_ratings.dat"
    ragged.write_bytes(b"1::2::3::4\n1::2::3::4::5\n")
    with pytest.raises(DataError, match=r"line 2: 5 '::'-separated fields, a ratings file has 4"):
        read_movielens_dat(ragged, kind="ratings")
    with pytest.raises(DataError, match="unknown MovieLens file kind"):
        read_movielens_dat(ragged)
    blank = tmp_path / "ratings.dat"
    blank.write_bytes(b"\n\n\n")
    with pytest.raises(DataError, match=r"ratings\.dat: the file has no data rows"):
        read_movielens_dat(blank)
    blank.write_bytes(b"1::2::5::100\n\n1::x::4::101\n")  # blank lines keep the numbering
    with pytest.raises(DataError, match=r"ratings\.dat: line 3: item 'x' is not an integer"):
        read_movielens_dat(blank)


def test_recbole_atomic_with_windows_line_ends(tmp_path):
    path = tmp_path / "x.item"
    path.write_bytes(
        b"item_id:token\tyear:float\tclass:token_seq\r\n"
        b"Toy Story (1995)\t1995\tAnimation Comedy\r\n"
        b"Heat (1995)\t\tAction\r\n"
    )
    frame = read_atomic(path)
    assert list(frame.columns) == ["item_id", "year", "class"]
    assert frame["item_id"].tolist() == ["Toy Story (1995)", "Heat (1995)"]
    assert frame["year"].iloc[0] == 1995.0 and np.isnan(frame["year"].iloc[1])
    assert frame["class"].tolist() == [["Animation", "Comedy"], ["Action"]]
    bad = tmp_path / "bad.inter"
    bad.write_bytes(b"user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match="header field 'user_id' is not 'name:type'"):
        read_atomic(bad)
    bad.write_bytes(b"user_id:token\trating:float\n1\tfive\n")
    with pytest.raises(DataError, match="line 2: 'five' in column 'rating' is not a number"):
        read_atomic(bad)


# --------------------------------------------------------------------------------------------
# No silent wrong result: each of these once read without a word (issue 12)
# --------------------------------------------------------------------------------------------


def test_a_field_too_many_on_every_row_is_an_error_not_a_shift(tmp_path):
    """pandas takes a first column with no header for the index and shifts every column."""
    path = write(tmp_path / "log.csv", "user,item,timestamp\n1,2,3,4\n5,6,7,8\n")
    with pytest.raises(DataError, match=r"log\.csv: line 2: 4 fields where the header has 3"):
        read_interactions(path)
    atomic = tmp_path / "x.inter"
    atomic.write_bytes(b"user_id:token\titem_id:token\n1\t2\t3\n4\t5\t6\n")
    with pytest.raises(DataError, match=r"x\.inter: line 2: 3 fields where the header has 2"):
        read_atomic(atomic)


def test_movielens_dat_keeps_half_stars_and_refuses_fractional_ids(tmp_path):
    ratings = tmp_path / "ratings.dat"
    ratings.write_bytes(b"1::1193::4.5::978300760\n")
    assert read_movielens_dat(ratings)["rating"].tolist() == [4.5]
    ratings.write_bytes(b"1::2.7::4::978300760\n")
    with pytest.raises(DataError, match=r"line 1: item '2.7' is not an integer"):
        read_movielens_dat(ratings)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1e20", r"line 3: timestamp in 'timestamp' '1e20' is not a time"),
        ("inf", r"line 3: timestamp in 'timestamp' 'inf' is not a time"),
        ("-inf", r"line 3: timestamp in 'timestamp' '-inf' is not a time"),
        ("NaN", r"line 3: no value in column 'timestamp' \(got 'NaN'"),
    ],
)
def test_timestamps_out_of_range_are_errors(tmp_path, value, message):
    path = write(tmp_path / "log.csv", f"user,item,timestamp\n1,2,3\n1,3,{value}\n")
    with pytest.raises(DataError, match=message):
        read_interactions(path)


def test_milliseconds_say_so_and_read_with_their_unit(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\n1,2,978300760123\n")
    with pytest.raises(DataError, match=r"another unit\? set the timestamp unit"):
        read_interactions(path)
    assert read_interactions(path, timestamp_unit="ms")["timestamp"].tolist() == [978300760]


def test_sub_second_times_keep_their_order(tmp_path):
    # File order: 10.7 s, 10.2 s, 11.0 s: whole seconds would tie the first two in file order.
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,10.7\nu,b,10.2\nu,c,11.0\nv,d,5\n")
    frame = read_interactions(path)
    assert frame["item"].tolist() == ["b", "a", "c", "d"]  # otherwise in file order
    assert frame["timestamp"].tolist() == [10, 10, 11, 5]
    late = write(tmp_path / "late.csv", "user,item,timestamp\nu,a,10.7\nv,d,5\nu,b,10.2\n")
    assert read_interactions(late)["item"].tolist() == ["b", "d", "a"]
    iso = write(
        tmp_path / "iso.csv",
        "user,item,timestamp\nu,a,2000-01-01T00:00:00.900\nu,b,2000-01-01T00:00:00.100\n",
    )
    assert read_interactions(iso)["item"].tolist() == ["b", "a"]


@pytest.mark.parametrize("token", ["NaN", "nan", "NULL", "None", "N/A"])
def test_a_missing_id_is_never_a_user_named_nan(tmp_path, token):
    path = write(tmp_path / "log.csv", f"user,item,timestamp\n1,2,3\n{token},3,4\n")
    with pytest.raises(DataError, match=rf"line 3: no value in column 'user' \(got '{token}'"):
        read_interactions(path)


def test_a_bad_float_seq_names_the_file_and_line(tmp_path):
    path = tmp_path / "x.item"
    path.write_bytes(b"item_id:token\temb:float_seq\n1\t0.5 1.5\n2\t0.5 oops\n")
    with pytest.raises(DataError, match=r"x\.item: line 3: 'oops' in the float_seq column 'emb'"):
        read_atomic(path)
