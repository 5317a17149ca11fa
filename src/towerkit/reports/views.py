"""The runs a report reads: a run directory's metrics, per-user outcomes and item map, loaded
without the model or the data set."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from towerkit.config import Config
from towerkit.errors import TowerkitError
from towerkit.evaluation.outcomes import (
    Outcomes,
)
from towerkit.runs import (
    ITEMS_FILE,
    METRICS_FILE,
    OUTCOMES_FILE,
    RunDir,
    RunDirError,
)
from towerkit.storage import is_url

logger = logging.getLogger(__name__)


class ReportError(TowerkitError):
    """A run that cannot be reported: unfinished, or a file missing or damaged."""


@dataclass
class RunView:
    """What a report reads of one finished run."""

    name: str
    path: Path
    config: Config
    metrics: dict[str, Any]
    outcomes: Outcomes
    titles: np.ndarray | None  # by item id, index 0 padding
    labels: tuple[str, np.ndarray] | None
    vectors: np.ndarray  # [n_items, D] (a multi-interest model's items are still [n, D])
    fingerprint: str

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> RunView:
        """Read a run for a report.

        Raises:
            ReportError: the run is unfinished, or one of its files is missing or damaged
                (the message names the file, in one line).
        """
        try:
            if is_url(path):  # a snapshot of the run published there, read like a folder
                run = RunDir(str(path))
                name = name or unique_names([str(path)])[0]
                path = run.path
            else:
                path = Path(path)
                if not path.is_dir():
                    raise ReportError(f"{path}: not a run directory (it does not exist)")
                run = RunDir(path)
            run.require_finished()
            config = run.config
            fingerprint = str(run.data["fingerprint"])
        except RunDirError as err:
            raise ReportError(str(err)) from None
        except (OSError, ValueError, KeyError) as err:
            raise ReportError(f"{path}: not a readable run directory ({err})") from None
        metrics = _read(path / METRICS_FILE, lambda p: json.loads(p.read_text()))
        if not isinstance(metrics, dict) or "test" not in metrics:
            raise ReportError(f"{path / METRICS_FILE}: damaged (no test metrics)")
        outcomes_path = path / OUTCOMES_FILE
        if not outcomes_path.exists():
            raise ReportError(
                f"{outcomes_path} is missing (a run written before towerkit kept per-user "
                f"outcomes); write it with: towerkit evaluate {path} --save"
            )
        try:
            outcomes = Outcomes.read(run.checked(OUTCOMES_FILE))
            items = _read(run.checked(ITEMS_FILE), pq.read_table)
        except RunDirError as err:
            raise ReportError(str(err)) from None
        except ValueError as err:
            raise ReportError(
                f"{err}; write it again with: towerkit evaluate {path} --save"
            ) from None
        try:
            meta = json.loads((items.schema.metadata or {}).get(b"towerkit", b"{}"))
            vectors = np.stack(items.column("vector").to_numpy(zero_copy_only=False)).astype(
                np.float32
            )
            titles = labels = None
            if "title" in items.column_names:
                titles = np.concatenate([[""], items.column("title").to_pylist()]).astype(object)
            if "label" in items.column_names:
                labels = (
                    str(meta.get("label", "label")),
                    np.concatenate([[""], items.column("label").to_pylist()]).astype(object),
                )
        except (KeyError, ValueError, TypeError) as err:
            raise ReportError(f"{path / ITEMS_FILE}: damaged ({err})") from None
        if len(vectors) != outcomes.n_items:
            raise ReportError(
                f"{path / ITEMS_FILE}: {len(vectors)} items, but {outcomes_path.name} ranks "
                f"{outcomes.n_items}; the run's files do not belong together"
            )
        return cls(
            name or path.name, path, config, metrics, outcomes, titles, labels, vectors, fingerprint
        )


def _read(path: Path, reader):
    if not path.exists():
        raise ReportError(f"{path} is missing")
    try:
        return reader(path)
    except Exception as err:  # any reader's complaint about a damaged file
        raise ReportError(f"{path}: damaged ({type(err).__name__}: {err})") from None


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """Short names for runs: the folder name (a URL's last segment), with its parent where two
    share one."""
    pure = [PurePosixPath(str(p).rstrip("/")) if is_url(p) else Path(p) for p in paths]
    names = [p.name for p in pure]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in pure]
    return names


def same_evaluation(a: Outcomes, b: Outcomes) -> bool:
    """Whether two runs were tested on the same users, histories and targets over the same
    training counts: runs of one log whose models read different side features (which the
    data fingerprint covers) still pair user by user."""
    return a.n_items == b.n_items and all(
        np.array_equal(getattr(a, name), getattr(b, name))
        for name in ("users", "history", "target_offsets", "targets", "item_counts")
    )
