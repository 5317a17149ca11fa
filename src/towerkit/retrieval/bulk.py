"""Recommendations for every user, in bulk: ``towerkit recommend RUN --all-users --out
recs.parquet`` (``user``, ``rank``, ``item``, ``score``; one row per recommended item).

The users (every known user in id order, or a list of them) are cut into parts of ``batch``
users. Each part is searched through the retriever's index (any kind, filters included) and
written as a Parquet file of its own in a work folder beside the output (``.recs.parquet.parts``),
renamed into place once complete. When every part is there, they are copied in order into the
output (written to a temporary file and renamed) and the work folder is removed. So:

- **memory** is bounded by one part's results and the index's own search block (the exact
  index scores at most ``eval.max_bytes`` of a run's config at once);
- **an interruption** (Ctrl-C, SIGTERM, a full disk, a killed job) keeps the finished parts, and
  the same command goes on from the first missing one; the work folder's ``job.json`` holds the
  arguments, and other arguments are refused rather than mixed in;
- **shards**: ``shard=(i, n)`` writes the ``i``-th of ``n`` contiguous slices of the users
  (``0 <= i < n``), so a job array or a torchrun launch spreads the users over machines; the
  shards' rows, concatenated in shard order, are the rows of one unsharded job.

``vectors=True`` writes each user's query vector too, beside the output
(``recs.vectors.parquet``: ``user``, ``vector``; ``[K, D]`` per user for a model of K
interests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from towerkit.errors import DataError, RunInterrupted, TowerkitError
from towerkit.files import atomic_write, check_writable, os_reason

if TYPE_CHECKING:
    from towerkit.index import ItemFilter
    from towerkit.retrieval.retriever import Retriever

logger = logging.getLogger(__name__)

__all__ = ["UserShard", "read_users", "recommend_all", "recommend_run", "vectors_path"]

#: the format of a work folder's ``job.json`` (a folder of another format is refused)
JOB_FORMAT = 1


@dataclass(frozen=True)
class UserShard:
    """The ``index``-th of ``count`` contiguous slices of the users (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise DataError(
                f"shard {self.index}/{self.count}: give I/N with 0 <= I < N (0/4 to 3/4 for four)"
            )

    @classmethod
    def parse(cls, text: str) -> UserShard:
        """``"I/N"`` as a shard (``"0/1"``: all the users).

        >>> UserShard.parse("2/4")
        UserShard(index=2, count=4)
        """
        index, slash, count = text.partition("/")
        try:
            numbers = int(index), int(count) if slash else -1
        except ValueError:
            raise DataError(f"shard {text!r}: give I/N (0/4 is the first of four)") from None
        return cls(*numbers)

    def of(self, n: int) -> slice:
        """This shard's rows among ``n``: the shards cover ``0..n`` in order, each once.

        >>> [UserShard(i, 3).of(10) for i in range(3)]
        [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
        """
        return slice(self.index * n // self.count, (self.index + 1) * n // self.count)


def vectors_path(out: Path) -> Path:
    """Where the user vectors of a job writing ``out`` go: ``recs.parquet`` ->
    ``recs.vectors.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.vectors{out.suffix or '.parquet'}")


def recommend_all(
    retriever: Retriever,
    out: str | Path,
    *,
    k: int = 100,
    users: Sequence[Any] | None = None,
    where: str | ItemFilter | None = None,
    shard: UserShard = UserShard(),
    batch: int = 10_000,
    vectors: bool = False,
    identity: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write the top-``k`` items of every user (or of ``users``, raw ids, in their order) to
    ``out``, their seen items left out (see the module docstring for the layout, resuming and
    shards). Returns ``out``.

    Args:
        identity: what the results depend on besides these arguments (the model's version,
            the index and its options); a stopped job goes on only under the same identity.

    Raises:
        UnknownError: a user the model never saw (nothing is written).
        DataError: a repeated user, no users, a work folder of another job.
        RunInterrupted: Ctrl-C or SIGTERM (the finished parts are kept).
        TowerkitError: a full disk or another write failure (the finished parts are kept).
    """
    out = Path(out)
    if not 1 <= k <= len(retriever.item_vocab):
        raise DataError(f"k = {k}: give 1 to {len(retriever.item_vocab)} (the catalogue's size)")
    if batch < 1:
        raise DataError(f"batch = {batch}: give at least 1 user per part")
    check_writable(out)
    if vectors:
        check_writable(vectors_path(out))
    ids = _user_ids(retriever, users)
    mine = ids[shard.of(len(ids))]
    text = None if where is None else str(getattr(where, "text", where))
    if isinstance(where, str):
        where = retriever.index.parse_filter(where)  # a bad filter fails before any work
    job = {
        "format": JOB_FORMAT,
        **(identity or {}),
        "k": k,
        "users": hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest(),
        "shard": f"{shard.index}/{shard.count}",
        "batch": batch,
        "filter": text,
        "vectors": vectors,
    }
    work = out.parent / f".{out.name}.parts"
    _open_work(work, job)
    parts = math.ceil(len(mine) / batch)
    done = sum(len(mine[p * batch : (p + 1) * batch]) for p in range(parts) if _done(work, p))
    bar = tqdm(total=len(mine), initial=done, unit=" users", desc="recommend", disable=not progress)
    try:
        for part in range(parts):
            if _done(work, part):
                continue
            chosen = mine[part * batch : (part + 1) * batch]
            _write_part(retriever, work, part, chosen, k, where, vectors)
            done += len(chosen)
            bar.update(len(chosen))
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"stopped after {done:,} of {len(mine):,} users; the finished parts are kept in "
            f"{work}: run the same command again to go on"
        ) from None
    except OSError as err:
        where_ = err.filename or work
        raise TowerkitError(
            f"{where_}: {os_reason(err)}; the {done:,} users finished are kept in {work}: run "
            "the same command again to go on"
        ) from None
    finally:
        bar.close()
    _combine(work, parts, out, "")
    if vectors:
        _combine(work, parts, vectors_path(out), ".vectors")
    shutil.rmtree(work, ignore_errors=True)
    logger.info("top %d items of %s users written to %s", k, f"{len(mine):,}", out)
    return out


def _user_ids(retriever: Retriever, users: Sequence[Any] | None) -> np.ndarray:
    if users is None:
        ids = np.arange(1, len(retriever.user_vocab) + 1, dtype=np.int64)
    else:
        ids = np.asarray(retriever.encode_users(list(users)), dtype=np.int64)
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            repeated = retriever.user_vocab.decode(unique[counts > 1][:3])
            raise DataError(
                f"the users list repeats {int((counts > 1).sum()):,} user(s) "
                f"({', '.join(map(str, repeated))}): give each once"
            )
    if not len(ids):
        raise DataError("no users to recommend for")
    return ids


def _part(work: Path, part: int, kind: str = "") -> Path:
    return work / f"part-{part:05d}{kind}.parquet"


def _done(work: Path, part: int) -> bool:
    return _part(work, part).exists()


def _open_work(work: Path, job: dict[str, Any]) -> None:
    """Create the work folder for ``job``, or check that the one there is the same job's."""
    record = work / "job.json"
    if work.exists():
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError):
            raise DataError(
                f"{work}: not the work folder of a bulk job (no readable job.json); remove it "
                "to start again"
            ) from None
        if before != job:
            changed = sorted(key for key in {*before, *job} if before.get(key) != job.get(key))
            raise DataError(
                f"{work}: a job with other arguments stopped here (they differ in: "
                f"{', '.join(changed)}); give the same arguments to go on, or remove the folder "
                "to start again"
            )
        logger.info("going on with the job stopped in %s", work)
        return
    work.mkdir()
    atomic_write(record, lambda tmp: tmp.write_text(json.dumps(job, indent=2) + "\n"))


def _write_part(
    retriever: Retriever,
    work: Path,
    part: int,
    users: np.ndarray,
    k: int,
    where: ItemFilter | None,
    vectors: bool,
) -> None:
    queries = retriever.user_queries(users)
    found = retriever.search(queries, k, retriever.seen(users), where)
    ids = np.asarray(found.ids)
    valid = ids > 0
    raw_users = retriever.user_vocab.raw[users - 1]
    table = pa.table({
        "user": pa.array(np.repeat(raw_users, k).reshape(len(users), k)[valid]),
        "rank": pa.array(np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), ids.shape)[valid]),
        "item": pa.array(retriever.item_vocab.raw[ids[valid] - 1]),
        "score": pa.array(np.asarray(found.scores, dtype=np.float32)[valid]),
    })  # fmt: skip
    if vectors:  # first: the results' file marks the part as done
        flat = np.asarray(queries, dtype=np.float32).reshape(len(users), -1)
        column = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        vector_table = pa.table({"user": pa.array(raw_users), "vector": column})
        atomic_write(_part(work, part, ".vectors"), lambda tmp: pq.write_table(vector_table, tmp))
    atomic_write(_part(work, part), lambda tmp: pq.write_table(table, tmp))


def _combine(work: Path, parts: int, out: Path, kind: str) -> None:
    """The parts, in order, as one Parquet file at ``out`` (written whole, then renamed)."""

    def write(tmp: Path) -> None:
        writer = None
        try:
            for part in range(parts):
                table = pq.read_table(_part(work, part, kind))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()

    atomic_write(out, write)


def read_users(path: str | Path) -> list[Any]:
    """Raw user ids from a file: a Parquet file's ``user`` column, or a text file of one id per
    line (a first line ``user`` is a header; blank lines are skipped).

    Raises:
        DataError: a missing or unreadable file, a Parquet file without a ``user`` column.
    """
    from towerkit.data.readers import check_file
    from towerkit.errors import naming

    path = Path(path)
    check_file(path)
    if path.suffix == ".parquet":
        with naming(str(path)):
            names = pq.read_schema(path).names
            if "user" not in names:
                raise DataError(f"{path}: no column 'user' (it has: {', '.join(names)})")
            return pq.read_table(path, columns=["user"]).column("user").to_pylist()
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file of user ids (nor .parquet)") from None
    lines = [line for line in lines if line]
    return lines[1:] if lines[:1] == ["user"] else lines


def recommend_run(
    run: str | Path,
    out: str | Path,
    *,
    k: int = 100,
    users: Sequence[Any] | None = None,
    where: str | None = None,
    shard: UserShard = UserShard(),
    batch: int = 10_000,
    vectors: bool = False,
    index: str = "exact",
    index_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """:func:`recommend_all` for a run directory: the users and the filter are checked against
    exact search first, then the index asked for is built (a vector database is written only
    for a question it can answer). The exact index scores at most the run's ``eval.max_bytes``
    at once."""
    from towerkit.files import sha256_of
    from towerkit.index import make_index
    from towerkit.retrieval.retriever import Retriever
    from towerkit.runs import RunDir

    options = dict(index_options or {})
    make_index(index, **options)  # bad options fail before anything loads
    run_dir = RunDir(run)
    exact = {"max_bytes": run_dir.config.eval.max_bytes}
    retriever = Retriever.from_run(run_dir, **exact)
    try:
        parsed = retriever.index.parse_filter(where) if where is not None else None
        _user_ids(retriever, users)
        if index != "exact" or options:
            retriever.use_index(index, **(options if index != "exact" else {**exact, **options}))
        identity = {
            "model": sha256_of(run_dir.checked("model.pt"))[:16],
            "index": index,
            "index_options": {key: str(value) for key, value in sorted(options.items())},
        }
        return recommend_all(
            retriever, out, k=k, users=users, where=parsed, shard=shard, batch=batch,
            vectors=vectors, identity=identity, progress=progress,
        )  # fmt: skip
    finally:
        retriever.index.close()
