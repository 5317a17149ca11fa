"""Milvus: item vectors in a vector database, embedded (Milvus Lite) or a server or cluster.

``uri`` picks the database, through the one client (pymilvus) for both:

- a local path ending in ``.db``: Milvus Lite, a database in that file (directory), run inside
  this process; one process at a time may open it;
- ``http(s)://host:port``: a Milvus server (standalone or distributed), with the token of
  ``TOWERKIT_MILVUS_TOKEN`` (``user:password`` or an API key) where it asks for one;
- none: a private Milvus Lite file in a temporary directory, gone with the index (what a
  validation index during training uses).

A build writes a new collection ``{collection}_{8 hex}`` (ids, the item attributes as scalar
fields, vectors) in batches, builds its index (``HNSW``, ``IVF_FLAT`` or ``FLAT``), loads it and
only then points the alias ``collection`` at it: a reader of the alias sees the old collection
or the new one, never a half-written one. The collection the alias pointed to before is kept
(a server still searching it finishes on it); older ones of the alias are dropped. The index
itself searches the collection it built (``pinned``), so the vectors it answers with are always
those of the model that made them, whatever the alias says by then.

Scores follow :mod:`towerkit.similarity`: cosine is Milvus's ``COSINE``, dot its ``IP``, and
Euclidean its ``L2`` (a squared distance, negated). Exclusions over-fetch like the Faiss back
end; a filter is handed to Milvus as its expression.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from towerkit.errors import TowerkitError
from towerkit.index.base import (
    Index,
    IndexArgumentError,
    check_sizes,
    filter_candidates,
    normalized,
    over_fetch,
    require,
)
from towerkit.index.filters import ItemFilter
from towerkit.similarity import Similarity

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

TOKEN_VARIABLE = "TOWERKIT_MILVUS_TOKEN"
#: Milvus's largest top-k of one search
MAX_LIMIT = 16384
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
#: open clients per Milvus Lite file of this process: the file's embedded server (which holds
#: the file's lock) is stopped when its last client closes, so another process may open it
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


class VectorDatabaseError(TowerkitError, RuntimeError):
    """The vector database could not be reached, or refused what was asked of it (a server
    answers 503 for it)."""


def _pymilvus():
    return require("pymilvus", "milvus")


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def connect(uri: str, timeout: float, *, create: bool = True):
    """A client for ``uri`` (see the module docstring); ``create``: a Milvus Lite file that
    does not exist yet may be made (a build), else it must exist (a search of an export).

    Raises:
        VectorDatabaseError: the database cannot be reached or opened, a Milvus Lite path holds
            something else, cannot be written, or is missing where it is read (one line naming
            it; nothing is created).
        IndexArgumentError: a local path that does not end in ``.db``.
    """
    pymilvus = _pymilvus()
    local = not is_server(uri)
    if local:
        _check_lite(uri)
        require("milvus_lite", "milvus")
        _check_local(Path(uri), create=create)
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        _check_unlocked(uri)
    token = os.environ.get(TOKEN_VARIABLE, "")
    # pymilvus and Milvus Lite log a traceback for every failed call (towerkit reports each one
    # in one line), and Milvus Lite's gRPC server one for each call of pymilvus it does not
    # implement (AllocTimestamp, after which pymilvus goes on without it)
    for name in ("pymilvus", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        client = pymilvus.MilvusClient(uri=uri, token=token, timeout=timeout)
    except Exception as err:  # pymilvus raises its own, grpc's and OSError
        if local:
            _release_lite(uri, opened=False)
        raise VectorDatabaseError(f"cannot connect to Milvus at {uri}: {_reason(err)}") from None
    if local:
        with _LITE_LOCK:
            _LITE_USERS[uri] = _LITE_USERS.get(uri, 0) + 1
    return client


def _check_lite(uri: str) -> None:
    if not uri.endswith(".db"):
        raise IndexArgumentError(
            f"milvus uri {uri!r}: a Milvus Lite file's name ends in .db "
            "(or give a server as http://host:19530)"
        )


def _check_local(path: Path, *, create: bool) -> None:
    """What Milvus Lite would only call "Open local milvus failed" (or create silently), named:
    a file where its database folder goes, a folder that is not one of its databases, a
    missing database where one is read, a place this process cannot write."""
    if path.exists():
        if not path.is_dir():
            raise VectorDatabaseError(
                f"{path}: not a Milvus Lite database (a file; Milvus Lite keeps a database in a "
                "folder of that name): name another uri, or move the file aside"
            )
        if any(path.iterdir()) and not (path / "LOCK").exists():
            raise VectorDatabaseError(
                f"{path}: not a Milvus Lite database (a folder of other files): name another "
                "uri, or move the folder aside"
            )
        if create and not os.access(path, os.W_OK | os.X_OK):
            raise VectorDatabaseError(f"{path}: the Milvus Lite database is not writable")
        return
    if not create:
        raise VectorDatabaseError(
            f"{path}: no such Milvus Lite database (towerkit export RUN --to milvus -o "
            f"uri={path} writes one)"
        )
    parent = path.parent
    while not parent.exists():  # the folders made for it
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise VectorDatabaseError(
            f"cannot create the Milvus Lite database {path}: {parent} is "
            f"{'not a folder' if not parent.is_dir() else 'not writable'}"
        )


def _check_unlocked(uri: str) -> None:
    """A Milvus Lite file another process has open is one line naming it (Milvus Lite itself
    only says "Open local milvus failed")."""
    import fcntl

    with _LITE_LOCK:
        if _LITE_USERS.get(uri):
            return  # this process holds it: the clients share its server
    lock = Path(uri) / "LOCK"
    if not lock.exists():
        return
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VectorDatabaseError(
                f"cannot open Milvus at {uri}: another process has this Milvus Lite file open "
                "(one process at a time; a Milvus server shares a database between processes)"
            ) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def disconnect(client, uri: str) -> None:
    """Close a client of :func:`connect` (and a Milvus Lite file's server with its last)."""
    with contextlib.suppress(Exception):  # closing a client of a database that went away
        client.close()
    if not is_server(uri):
        _release_lite(uri, opened=True)


def _release_lite(uri: str, *, opened: bool) -> None:
    with _LITE_LOCK:
        users = _LITE_USERS.get(uri, 0) - (1 if opened else 0)
        if users > 0:
            _LITE_USERS[uri] = users
            return
        _LITE_USERS.pop(uri, None)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def _reason(err: Exception) -> str:
    """pymilvus's message without its ``<MilvusException: (code=..., message=...)>`` dress."""
    details = getattr(err, "details", None)
    if callable(details) and callable(getattr(err, "code", None)):  # a gRPC error
        message = f"{err.code().name}: {details()}"
    else:
        message = str(getattr(err, "message", None) or str(err) or type(err).__name__)
    if "another process holds the lock" in message:
        message = "another process has this Milvus Lite file open (one process at a time)"
    elif "does not exist" in message:
        message += " (dropped?)"
    return message.splitlines()[0]


def _field_type(column: pd.Series) -> tuple[Any, dict[str, Any]]:
    """The Milvus scalar type of an attribute column (with its parameters)."""
    import pandas as pd

    DataType = _pymilvus().DataType
    if pd.api.types.is_bool_dtype(column.dtype):
        return DataType.BOOL, {}
    if pd.api.types.is_integer_dtype(column.dtype):
        return DataType.INT64, {}
    if pd.api.types.is_float_dtype(column.dtype):
        return DataType.DOUBLE, {}
    longest = int(column.astype(str).str.encode("utf-8").str.len().max() or 1)
    return DataType.VARCHAR, {"max_length": min(65535, max(16, longest))}


def _attribute_values(column: pd.Series) -> list[Any]:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_integer_dtype(column.dtype):
        return column.tolist()
    if pd.api.types.is_float_dtype(column.dtype):
        return column.fillna(float("nan")).astype(float).tolist()
    return column.fillna("").astype(str).tolist()


def _hit_arrays(found: Any) -> tuple[np.ndarray, np.ndarray]:
    """One query's ids and distances; pymilvus's hit lists carry them as plain lists
    (``ids``, ``distances``), read without building a dict per hit (half the time of a
    search)."""
    if hasattr(found, "ids") and hasattr(found, "distances"):
        return np.asarray(found.ids, dtype=np.int64), np.asarray(found.distances, np.float32)
    ids = np.fromiter((h["id"] for h in found), dtype=np.int64, count=len(found))
    return ids, np.fromiter((h["distance"] for h in found), np.float32, len(found))


class _Connection:
    """What an index holds outside the process: its client, and the directory of a temporary
    Milvus Lite file; closed by :meth:`MilvusIndex.close` or when the index is collected."""

    def __init__(self, uri: str | None, timeout: float, *, create: bool = True) -> None:
        self.timeout, self.client, self.create = timeout, None, create
        self.tmp = None if uri is not None else Path(tempfile.mkdtemp(prefix="towerkit-milvus-"))
        self.uri = uri if uri is not None else str(self.tmp / "items.db")

    def open(self):
        if self.client is None:
            self.client = connect(self.uri, self.timeout, create=self.create)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            disconnect(client, self.uri)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class MilvusIndex(Index):
    """Item vectors in a Milvus collection (see the module docstring).

    Args:
        similarity, normalize: see :class:`~towerkit.index.base.Index`.
        uri: a Milvus Lite file (``PATH.db``), a server (``http://host:19530``), or None for
            a temporary Milvus Lite file.
        collection: the alias readers use; each build writes a new collection under it.
        index_type: ``HNSW``, ``IVF_FLAT`` or ``FLAT`` (exact).
        M, ef_construction, ef_search: HNSW's graph degree, build and search candidate lists
            (``ef`` is raised to the fetch size when smaller).
        nlist, nprobe: IVF_FLAT's cells (default ``4 * sqrt(N)``, at most ``N / 39``) and the
            cells searched per query.
        batch: rows per insert.
        query_chunk: queries per search call.
        timeout: seconds a search or a question to the database may take.
        build_timeout: seconds writing, indexing or loading a collection may take (an HNSW
            graph over a million vectors takes minutes).
        pinned: the collection to search (set by a build; given, the index searches that
            collection as it is, once loaded with :meth:`~towerkit.index.base.Index.load`).
    """

    kind = "milvus"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "M": (2, 1024),
        "ef_construction": (1, 1 << 16),
        "ef_search": (1, 1 << 16),
        "nlist": (1, 1 << 24),
        "nprobe": (1, 1 << 24),
        "batch": (1, 1 << 20),
        "query_chunk": (1, 1 << 20),
        "timeout": (0.001, 7 * 86_400),
        "build_timeout": (0.001, 7 * 86_400),
    }

    def __init__(
        self,
        similarity: str | Similarity = "cosine",
        *,
        normalize: bool = False,
        uri: str | None = None,
        collection: str = "towerkit_items",
        index_type: Literal["HNSW", "IVF_FLAT", "FLAT"] = "HNSW",
        M: int = 32,
        ef_construction: int = 100,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        batch: int = 10_000,
        query_chunk: int = 256,
        timeout: float = 30.0,
        build_timeout: float = 3600.0,
        pinned: str | None = None,
    ) -> None:
        super().__init__(similarity, normalize=normalize)
        if not _NAME.fullmatch(collection):
            raise IndexArgumentError(
                f"milvus collection {collection!r}: letters, digits and _, not starting with a "
                "digit"
            )
        if index_type not in ("HNSW", "IVF_FLAT", "FLAT"):
            raise IndexArgumentError(f"index_type must be HNSW, IVF_FLAT or FLAT, not {index_type}")
        check_sizes(M=M, ef_construction=ef_construction, ef_search=ef_search, nprobe=nprobe,
                    batch=batch, query_chunk=query_chunk)  # fmt: skip
        if nlist is not None and nlist < 1:
            raise IndexArgumentError(f"nlist must be >= 1, got {nlist}")
        for name, value in {"timeout": timeout, "build_timeout": build_timeout}.items():
            if not value > 0:
                raise IndexArgumentError(f"{name} must be > 0 seconds, got {value}")
        if uri is not None and not is_server(uri):
            _check_lite(uri)
            uri = str(Path(uri).expanduser().resolve())  # the same file from any directory
        self.uri, self.collection, self.index_type = uri, collection, index_type
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search
        self.nlist, self.nprobe, self.batch, self.query_chunk = nlist, nprobe, batch, query_chunk
        self.timeout, self.build_timeout, self.pinned = timeout, build_timeout, pinned
        self._connection: _Connection | None = None

    def options(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "collection": self.collection,
            "index_type": self.index_type,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "batch": self.batch,
            "query_chunk": self.query_chunk,
            "timeout": self.timeout,
            "build_timeout": self.build_timeout,
            "pinned": self.pinned,
        }

    # -- the database ---------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The database, as a message names it."""
        return self.uri or "a temporary Milvus Lite file"

    @property
    def client(self):
        """The database's client (connected on first use)."""
        if self._connection is None:
            # a pinned collection is read as it is: its database must exist already
            self._connection = _Connection(self.uri, self.timeout, create=self.pinned is None)
            weakref.finalize(self, self._connection.close)
        return self._connection.open()

    @classmethod
    def attach(
        cls,
        similarity: str | Similarity,
        ids: np.ndarray,
        dim: int,
        attributes: pd.DataFrame | None = None,
        *,
        normalize: bool = False,
        **options: Any,
    ) -> MilvusIndex:
        """Search a collection that holds ``ids`` already (``pinned``, or the alias
        ``collection``), built by an earlier export, without writing anything.

        Raises:
            VectorDatabaseError: the database cannot be reached, has no such collection, or
                holds another dimension or number of vectors.
        """
        index = cls(similarity, normalize=normalize, **options)
        index.pinned = index.pinned or index.collection
        index._set_ids(np.asarray(ids, dtype=np.int64))
        index.dim = int(dim)
        index.set_attributes(attributes)
        index._load(Path(index.where))
        return index

    def _call(self, what: str, method: str, *args: Any, long: bool = False, **kwargs: Any) -> Any:
        """One client call (``long``: one that writes, indexes or loads a collection); the
        database's errors become one :class:`VectorDatabaseError`."""
        timeout = self.build_timeout if long else self.timeout
        try:
            return getattr(self.client, method)(*args, timeout=timeout, **kwargs)
        except TowerkitError:
            raise
        except Exception as err:
            raise VectorDatabaseError(f"Milvus at {self.where}: {what}: {_reason(err)}") from None

    @property
    def metric(self) -> str:
        """Milvus's name of the similarity: ``COSINE``, ``IP`` or ``L2``."""
        if self.similarity.name == "euclidean":
            return "L2"
        return "COSINE" if self.similarity.name == "cosine" else "IP"

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        # Cosine: Milvus normalises; Euclidean on normalised vectors: done here.
        euclidean = self.similarity.name == "euclidean" and self.similarity.normalize
        return normalized(x) if euclidean else x

    def _index_params(self, n: int) -> dict[str, Any]:
        if self.index_type == "HNSW":
            return {"M": self.M, "efConstruction": self.ef_construction}
        if self.index_type == "IVF_FLAT":
            return {"nlist": self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))}
        return {}

    def _search_params(self, n_fetch: int) -> dict[str, Any]:
        if self.index_type == "HNSW":
            params = {"ef": max(self.ef_search, n_fetch)}
        elif self.index_type == "IVF_FLAT":
            params = {"nprobe": self.nprobe}
        else:
            params = {}
        return {"metric_type": self.metric, "params": params}

    # -- the protocol ---------------------------------------------------------------------

    def _build(self, vectors: np.ndarray) -> None:
        import pandas as pd
        from tqdm.auto import tqdm

        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        attributes = self.attributes if self.attributes is not None else pd.DataFrame()
        clash = sorted({"id", "vector"} & set(attributes.columns))
        if clash:
            raise IndexArgumentError(f"item attributes may not be named {', '.join(clash)}")
        name = f"{self.collection}_{uuid.uuid4().hex[:8]}"
        self._check_alias()
        schema = self._call("create a schema", "create_schema", auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        for column in attributes.columns:
            kind, params = _field_type(attributes[column])
            schema.add_field(str(column), kind, **params)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        self._call(f"create collection {name}", "create_collection", name, schema=schema)
        try:
            prepared = self._prepare(vectors)
            columns = {c: _attribute_values(attributes[c]) for c in attributes.columns}
            with tqdm(total=len(prepared), desc=f"milvus {name}", unit="item",
                      disable=len(prepared) < 10 * self.batch, leave=False) as bar:  # fmt: skip
                for begin in range(0, len(prepared), self.batch):
                    end = min(begin + self.batch, len(prepared))
                    rows = [
                        {"id": int(self.ids[i]), "vector": prepared[i],
                         **{c: values[i] for c, values in columns.items()}}
                        for i in range(begin, end)
                    ]  # fmt: skip
                    self._call(f"insert into {name}", "insert", name, rows, long=True)
                    bar.update(end - begin)
            self._call(f"flush {name}", "flush", name, long=True)
            index_params = self.client.prepare_index_params()
            build_params = self._index_params(len(prepared))
            index_params.add_index(
                "vector", index_type=self.index_type, metric_type=self.metric, params=build_params
            )
            # pymilvus sends the build parameters as flat keys, which Milvus servers read;
            # Milvus Lite reads them from one JSON "params" key only (and a server reads that
            # too), so both go.
            index_params[0]._configs["params"] = build_params
            self._call(f"index {name}", "create_index", name, index_params, long=True)
            self._call(f"load {name}", "load_collection", name, long=True)
        except BaseException:
            self._drop(name)
            raise
        self._switch_alias(name)
        self.pinned = name
        logger.info("milvus: %d vectors in %s (alias %s) at %s", len(prepared), name,
                    self.collection, self.where)  # fmt: skip

    def _upsert(self, positions, vectors, ids, rows):
        """Milvus's own upsert into the collection searched (by primary key: a known id's row
        is replaced, a new one added); the index objects before and after share it."""
        if self.pinned is None:
            raise IndexArgumentError("the milvus index has no collection: call build() first")
        import pandas as pd

        prepared = self._prepare(np.asarray(vectors, dtype=np.float32))
        rows = rows if rows is not None else pd.DataFrame(index=range(len(ids)))
        columns = {c: _attribute_values(rows[c]) for c in rows.columns}
        data = [
            {"id": int(ids[i]), "vector": prepared[i], **{c: v[i] for c, v in columns.items()}}
            for i in range(len(ids))
        ]
        self._call(f"upsert into {self.pinned}", "upsert", self.pinned, data, long=True)
        return positions < 0

    def _check_alias(self) -> None:
        if self.collection in self._call("list collections", "list_collections"):
            raise IndexArgumentError(
                f"Milvus at {self.where} has a collection named {self.collection!r}: towerkit "
                "keeps its name for an alias over its own collections; pick another collection"
            )

    def _target(self) -> str | None:
        """The collection the alias points to now, or None."""
        aliases = self._call("list aliases", "list_aliases").get("aliases", [])
        if self.collection not in aliases:
            return None
        return self._call("describe alias", "describe_alias", self.collection)["collection_name"]

    def _switch_alias(self, name: str) -> None:
        previous = self._target()
        if previous is None:
            self._call(f"create alias {self.collection}", "create_alias", name, self.collection)
        else:
            self._call(f"switch alias {self.collection}", "alter_alias", name, self.collection)
        pattern = re.compile(re.escape(self.collection) + r"_[0-9a-f]{8}")
        for old in self._call("list collections", "list_collections"):
            if pattern.fullmatch(old) and old not in (name, previous):
                self._drop(old)

    def _drop(self, name: str) -> None:
        try:
            self._call(f"drop {name}", "drop_collection", name)
        except VectorDatabaseError as err:
            logger.warning("%s", err)

    def _search_positions(self, queries, k, excluded, where: ItemFilter | None):
        if self.pinned is None:
            raise IndexArgumentError("the milvus index has no collection: call build() first")
        queries = self._prepare(queries)
        sorted_ids = self._sorted_ids
        expression = "" if where is None else where.expression

        def search_rows(rows: np.ndarray, n_fetch: int) -> tuple[np.ndarray, np.ndarray]:
            positions = np.full((len(rows), n_fetch), -1, dtype=np.int64)
            scores = np.full((len(rows), n_fetch), -np.inf, dtype=np.float32)
            hits = self._search(queries[rows], n_fetch, expression)
            for row, found in enumerate(hits):
                ids, values = _hit_arrays(found)
                slot = np.searchsorted(sorted_ids, ids).clip(0, len(sorted_ids) - 1)
                # an id this object does not hold: upserted since (a newer object has it)
                held = sorted_ids[slot] == ids
                slot, values = slot[held], values[held]
                positions[row, : len(slot)] = self._order[slot]
                scores[row, : len(slot)] = -values if self.metric == "L2" else values
            return positions, scores

        most = min(len(self), MAX_LIMIT)
        positions, scores = over_fetch(
            len(queries), k, excluded, most, self.query_chunk, search_rows
        )
        return filter_candidates(positions, scores, k, excluded)

    def _search(self, queries: np.ndarray, n_fetch: int, expression: str) -> list[list[dict]]:
        """One search call; a collection the database released (a restarted server) is loaded
        again and searched once more."""
        args = ("search", self.pinned)
        kwargs = {
            "data": list(queries),
            "limit": n_fetch,
            "filter": expression,
            "search_params": self._search_params(n_fetch),
            "output_fields": [],
        }
        try:
            return self._call(f"search {self.pinned}", *args, **kwargs)
        except VectorDatabaseError as err:
            try:
                released = self._state() == "NotLoad"
            except VectorDatabaseError:
                released = False
            if not released:
                raise err from None
            self._call(f"load {self.pinned}", "load_collection", self.pinned, long=True)
            return self._call(f"search {self.pinned}", *args, **kwargs)

    def _state(self) -> str:
        """The pinned collection's load state: ``Loaded``, ``Loading``, ``NotLoad``,
        ``NotExist``."""
        state = self._call(f"load state of {self.pinned}", "get_load_state", self.pinned)
        return getattr(state.get("state"), "name", str(state.get("state")))

    def ready(self) -> str | None:
        """None when the collection is loaded and answers; else why not (one line). A
        collection the database released (a restarted server) is loaded again here."""
        try:
            state = self._state()
            if state == "NotLoad":
                self._call(f"load {self.pinned}", "load_collection", self.pinned, long=True)
                state = self._state()
        except VectorDatabaseError as err:
            return str(err)
        if state == "Loaded":
            return None
        if state == "NotExist":
            return (
                f"Milvus at {self.where} has no collection {self.pinned} (dropped?): reload "
                "the server with a newer export"
            )
        return f"Milvus at {self.where}: collection {self.pinned} is not loaded ({state})"

    def _save(self, path: Path) -> None:
        if self.uri is None:
            raise IndexArgumentError(
                "a milvus index in a temporary Milvus Lite file cannot be saved: give it a "
                "database (-o uri=items.db, or -o uri=http://host:19530)"
            )

    def _load(self, path: Path) -> None:
        if self.pinned is None:
            raise IndexArgumentError(f"{path}: the saved milvus index names no collection")
        if not self._call(f"look for {self.pinned}", "has_collection", self.pinned):
            raise VectorDatabaseError(
                f"Milvus at {self.where} has no collection {self.pinned} (dropped?): export "
                "the run to it again"
            )
        described = self._call(f"describe {self.pinned}", "describe_collection", self.pinned)
        vector = [f for f in described["fields"] if f["name"] == "vector"]
        dim = int(vector[0]["params"]["dim"]) if vector else None
        if dim != self.dim:
            raise VectorDatabaseError(
                f"Milvus at {self.where}: collection {self.pinned} holds vectors of dimension "
                f"{dim}, this model's are {self.dim}"
            )
        self._call(f"load {self.pinned}", "load_collection", self.pinned, long=True)
        stats = self._call(f"count {self.pinned}", "get_collection_stats", self.pinned)
        rows = int(stats.get("row_count", -1))
        if rows != len(self.ids):
            raise VectorDatabaseError(
                f"Milvus at {self.where}: collection {self.pinned} holds {rows} vectors, this "
                f"model has {len(self.ids)} items"
            )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


__all__ = ["MilvusIndex", "VectorDatabaseError", "connect", "disconnect"]
