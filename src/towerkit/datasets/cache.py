"""The local cache of known data sets: ``$TOWERKIT_HOME/datasets/NAME`` as Parquet tables with
a manifest of their sha256 and counts. A cache that fails the check is fetched again, never
used; a new cache is written to a staging folder and swapped in whole."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from towerkit.data.interactions import Interactions
from towerkit.datasets.sources import sha256_of
from towerkit.files import remove_stale, staging_dir, towerkit_home

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
_TABLES = ("interactions", "users", "items")


def cache_dir(name: str, home: Path | None = None) -> Path:
    """Where data set ``name`` is cached: ``$TOWERKIT_HOME/datasets/NAME`` (or under ``home``)."""
    return (home or towerkit_home()) / "datasets" / name


def counts_of(interactions: Interactions) -> dict[str, int]:
    """Interactions, users and items of a log: what a cache's manifest pins."""
    return {
        "interactions": len(interactions),
        "users": interactions.n_users,
        "items": interactions.n_items,
    }


def is_valid(directory: Path, counts: dict[str, int]) -> bool:
    """Whether ``directory`` holds a whole cache: every table matching its manifest's sha256,
    the manifest's counts equal to ``counts``."""
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("version") != CACHE_VERSION or manifest.get("counts") != counts:
            return False
        if "interactions.parquet" not in manifest["files"]:
            return False
        for name, digest in manifest["files"].items():
            if sha256_of(directory / name) != digest:
                logger.warning("%s: %s does not match its manifest", directory, name)
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def write(directory: Path, interactions: Interactions, source: str) -> None:
    """Write the tables (those the data set has) and their manifest to a temporary folder, then
    swap it in."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(directory.parent, f".{directory.name}-old-")
    staging = staging_dir(directory)
    try:
        tables = {
            "interactions": interactions.frame,
            "users": interactions.users,
            "items": interactions.items,
        }
        files = {}
        for table, frame in tables.items():
            if frame is None:  # a data set without this side table
                continue
            path = staging / f"{table}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
            files[path.name] = sha256_of(path)
        manifest = {
            "version": CACHE_VERSION,
            "source": source,
            "counts": counts_of(interactions),
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


def read(directory: Path) -> Interactions:
    """The interactions and side tables of a valid cache."""
    tables = {
        t: pq.read_table(directory / f"{t}.parquet").to_pandas()
        for t in _TABLES
        if (directory / f"{t}.parquet").exists()
    }
    for frame in tables.values():
        # Parquet gives list columns back as numpy arrays; keep the documented list type.
        for column in frame.columns:
            if len(frame) and isinstance(frame[column].iloc[0], np.ndarray):
                frame[column] = frame[column].map(list)
    return Interactions(
        tables["interactions"], users=tables.get("users"), items=tables.get("items")
    )


def manifest(directory: Path) -> dict | None:
    """A cache's manifest, or None when there is none (or it does not parse)."""
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
