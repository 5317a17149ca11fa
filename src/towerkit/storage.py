"""Object storage: logs read from a bucket, runs and exports written to one.

A location is a local path or a URL of any fsspec filesystem (``s3://bucket/key``, ``gs://``,
``az://``; ``s3://`` needs ``pip install 'towerkit[s3]'``). Credentials come from the store's
own chain (for S3: the environment, the profile, the instance role), and so does the endpoint
(``AWS_ENDPOINT_URL`` for an S3-compatible store: MinIO, Ceph, R2). towerkit never takes a
credential as an argument, so none is ever written into a config, a run, a log or a message.

Reading (:func:`fetch`): the objects under a URL are listed (one request per page of keys),
those the caller keeps (a partition filter) are downloaded, each once: a local copy is keyed by
the object's URL, ETag (or version) and size under ``$TOWERKIT_HOME/objects``, and checked
against the size listed and, where the ETag is an MD5, against it. The reader then reads a local
*view*: a folder of links to exactly the objects listed, at their relative keys (so Hive
partition folders stay partition columns).

Writing (:func:`publish`): a run or an export is written locally, then its files are uploaded
and a manifest, ``_manifest.json`` (every file's size and sha256), is written **last**. A
reader (:func:`pull`) refuses a prefix without one, so a half-written upload is never read as a
run; the files it downloads are checked against the manifest's sha256. A prefix published
again (a newer export at the same place) loses its manifest first, so a reader sees the old
export, then none, then the new one: never a mixture.

Every failure of the store is one line (:class:`~towerkit.errors.StorageError`) naming the
object's URL and the reason. Throttled requests and dropped connections are retried with
backoff by the store's client (botocore's retry modes: ``AWS_MAX_ATTEMPTS``,
``AWS_RETRY_MODE``) before they become one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from towerkit.errors import MissingExtra, StorageError
from towerkit.files import sha256_of, staging_dir, towerkit_home

logger = logging.getLogger(__name__)

#: the manifest of a published prefix: every file's size and sha256, written last
MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1
#: local snapshots kept per URL read (a server reloading a newer export keeps the old one too)
SNAPSHOTS_KEPT = 2

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
             "abfs": "adlfs", "abfss": "adlfs"}  # fmt: skip


def is_url(value: object) -> bool:
    """Whether ``value`` names a location on a filesystem of fsspec's (``s3://…``), not a local
    path (``file://`` counts as local)."""
    if not isinstance(value, str):
        return False
    match = _SCHEME.match(value)
    return match is not None and match.group(1).lower() != "file"


def location(value: str | Path) -> str | Path:
    """A URL as the string it is, anything else as a local :class:`Path` (``file://``
    stripped)."""
    if isinstance(value, str) and value.lower().startswith("file://"):
        return Path(value[len("file://") :])
    return value if is_url(value) else Path(value)


def join(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended as key segments."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def _plain(url: str) -> str:
    """The URL without a query (a presigned URL's signature) or credentials in its netloc: what
    a message may show."""
    url = url.split("?", 1)[0]
    match = _SCHEME.match(url)
    if match and "@" in url[match.end() :].split("/", 1)[0]:
        rest = url[match.end() :]
        url = match.group(0) + rest.split("@", 1)[1]
    return url


# --------------------------------------------------------------------------------------------
# The filesystem, and its failures as one line
# --------------------------------------------------------------------------------------------


def filesystem(url: str) -> tuple[Any, str]:
    """fsspec's filesystem for ``url`` and the path on it (the store's own credential chain).

    Raises:
        MissingExtra: the filesystem's package is not installed.
        StorageError: a scheme fsspec does not know.
    """
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the s3 extra
        raise MissingExtra(
            f"{_plain(url)}: reading a URL needs fsspec: pip install 'towerkit[s3]'"
        ) from None
    scheme = _SCHEME.match(url).group(1).lower()  # type: ignore[union-attr]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        package = _PACKAGES.get(scheme, f"the package of {scheme}://")
        extra = " (pip install 'towerkit[s3]')" if package == "s3fs" else ""
        raise MissingExtra(f"{_plain(url)}: {scheme}:// needs {package}{extra}") from None
    except ValueError as err:
        raise StorageError(f"{_plain(url)}: {err}") from None


_CODES = {
    "NoSuchBucket": "no such bucket",
    "NoSuchKey": "no such key",
    "404": "no such key",
    "NotFound": "no such key",
    "AccessDenied": "access denied",
    "403": "access denied",
    "AllAccessDisabled": "access denied",
    "AccountProblem": "access denied",
    "InvalidAccessKeyId": "the credentials were refused (InvalidAccessKeyId)",
    "SignatureDoesNotMatch": "the credentials were refused (SignatureDoesNotMatch)",
    "ExpiredToken": "the credentials were refused (ExpiredToken)",
    "InvalidToken": "the credentials were refused (InvalidToken)",
}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
              "TooManyRequests", "TooManyRequestsException", "503", "429",
              "RequestThrottled", "ServiceUnavailable"}  # fmt: skip
_NETWORK = ("EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError",
            "ReadTimeoutError", "ClientConnectorError", "ServerDisconnectedError",
            "ClientPayloadError", "ClientOSError", "IncompleteRead", "FSTimeoutError",
            "ConnectionError", "TimeoutError", "ProxyConnectionError",
            "ResponseStreamingError", "ServerTimeoutError")  # fmt: skip


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__  # type: ignore[assignment]


def describe(err: BaseException) -> str | None:
    """What went wrong with the store, in a few words (no credential, no URL), or None where
    ``err`` is not the store's (a bug, an interrupt)."""
    if isinstance(err, KeyboardInterrupt | SystemExit | StorageError | MissingExtra):
        return None
    for link in _chain(err):
        response = getattr(link, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            code = str(response["Error"].get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _THROTTLED or status in (429, 503):
                return f"throttled ({code or status}), and still after the retries with backoff"
            if code in _CODES:
                return _CODES[code]
            message = str(response["Error"].get("Message", "")).splitlines()
            return f"{code or status}: {message[0] if message else 'refused'}"
        names = {cls.__name__ for cls in type(link).__mro__}
        if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
            return (
                "no credentials found (environment, profile or instance role: AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role)"
            )
        if names & set(_NETWORK):
            first = str(link).splitlines()[0] if str(link) else type(link).__name__
            return f"network failure ({_plain_text(first)})"
    if isinstance(err, FileNotFoundError):
        return "no such bucket" if "bucket does not exist" in str(err) else "no such key"
    if isinstance(err, PermissionError):
        return "access denied"
    if isinstance(err, OSError):
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return _plain_text(text)
    return None


def _plain_text(text: str) -> str:
    """``text`` with any URL's query string (a signature) cut."""
    return re.sub(r"(\w+://[^\s\"'?]*)\?[^\s\"']*", r"\1", text)


@contextlib.contextmanager
def failures(url: str) -> Iterator[None]:
    """Turn what the store raises inside into one :class:`StorageError` line naming ``url``."""
    try:
        yield
    except Exception as err:
        reason = describe(err)
        if reason is None:
            raise
        raise StorageError(f"{_plain(url)}: {reason}") from err


# --------------------------------------------------------------------------------------------
# Reading objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """One object as listed: its URL, its key under the listed prefix, size and version."""

    url: str
    relative: str
    size: int
    etag: str

    def record(self) -> dict[str, Any]:
        """What a run's ``data.json`` keeps of it."""
        return {"url": self.url, "size": self.size, "etag": self.etag}


def _version(info: dict[str, Any]) -> str:
    """An object's version as its store names it: the ETag, a version id, a generation; its
    modification time where the store has none of those."""
    for key in ("ETag", "etag", "VersionId", "generation", "md5Hash", "LastModified", "mtime"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return ""


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, tuple | list) else str(protocol)


def list_objects(url: str, keep: Callable[[str], bool] | None = None) -> list[StoredObject]:
    """The objects at ``url``: the object itself, or every object under it as a prefix whose
    relative key ``keep`` accepts (sorted by key). Listing reads no object's bytes.

    Raises:
        StorageError: no such bucket, nothing at ``url``, access denied, a network failure.
    """
    fs, root = filesystem(url)
    scheme = _protocol(fs)
    fs.invalidate_cache(root)  # (a listing cached earlier in this process may be stale)
    with failures(url):
        info = fs.info(root)
        if info.get("type") != "directory":
            name = PurePosixPath(root).name
            return [StoredObject(url, name, int(info.get("size") or 0), _version(info))]
        found = fs.find(root, detail=True)
    objects = []
    prefix = root.rstrip("/") + "/"
    for path, detail in sorted(found.items()):
        if detail.get("type") == "directory" or not path.startswith(prefix):
            continue
        relative = path[len(prefix) :]
        if keep is not None and not keep(relative):
            continue
        objects.append(
            StoredObject(
                f"{scheme}://{path}", relative, int(detail.get("size") or 0), _version(detail)
            )
        )
    return objects


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


_MD5 = re.compile(r"^[0-9a-f]{32}$")


def _check_download(obj: StoredObject, path: Path) -> None:
    size = path.stat().st_size
    if size != obj.size:
        raise StorageError(
            f"{_plain(obj.url)}: {size:,} bytes arrived of {obj.size:,} (changed while being "
            "read, or cut off); try again"
        )
    if _MD5.match(obj.etag) and _md5_of(path) != obj.etag:
        raise StorageError(f"{_plain(obj.url)}: the bytes that arrived do not match its ETag")


def download(objects: Iterable[StoredObject], progress: bool = True) -> dict[str, Path]:
    """Each object's local copy (downloaded where not cached yet), by URL.

    Copies live in ``$TOWERKIT_HOME/objects``, keyed by URL, version and size: an object that
    changed in the bucket is downloaded again; one that did not is never read twice.
    """
    objects = list(objects)
    store = towerkit_home() / "objects"
    local = {o.url: store / _digest(o.url, o.etag, o.size)[:32] / PurePosixPath(o.url).name
             for o in objects}  # fmt: skip
    missing = [o for o in objects if not local[o.url].exists()]
    if not missing:
        return local
    total = sum(o.size for o in missing)
    logger.info("downloading %d object(s), %.1f MB", len(missing), total / 1e6)
    started = time.perf_counter()
    fs, _ = filesystem(missing[0].url)
    parts = []
    try:
        for obj in missing:
            local[obj.url].parent.mkdir(parents=True, exist_ok=True)
            parts.append(local[obj.url].with_name(f".{local[obj.url].name}.{os.getpid()}.part"))
        files = [(o.url, fs._strip_protocol(o.url), p) for o, p in zip(missing, parts, strict=True)]
        _get_many(fs, files, total=total, progress=progress)
        for obj, part in zip(missing, parts, strict=True):
            _check_download(obj, part)
            os.replace(part, local[obj.url])
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    logger.info("downloaded %.1f MB in %.1f s", total / 1e6, seconds)
    return local


#: objects downloaded at once (each a request of its own, on the filesystem's event loop)
PARALLEL = 8


def _get_many(
    fs: Any, files: list[tuple[str, str, Path]], *, total: int = 0, progress: bool = False
) -> None:
    """Download each ``(url, remote path, local path)``, :data:`PARALLEL` at a time (a bar of
    ``total`` bytes with ``progress``); the first failure (in the files' order) is raised naming
    its own object, the rest are cancelled."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    def get(url: str, remote: str, path: Path) -> None:
        with failures(url):
            fs.get_file(remote, str(path))

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = [pool.submit(get, *file) for file in files]
        try:
            for future, (_, _, path) in zip(futures, files, strict=True):
                future.result()
                bar.update(path.stat().st_size)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


@dataclass(frozen=True)
class Fetched:
    """Objects read from a URL: the local view to read, and what it holds."""

    path: Path
    objects: tuple[StoredObject, ...]
    url: str

    def records(self) -> list[dict[str, Any]]:
        """Each object's record (URL, size, ETag), as ``data.json`` keeps them."""
        return [o.record() for o in self.objects]


def fetch(url: str, keep: Callable[[str], bool] | None = None, *, progress: bool = True) -> Fetched:
    """Download what ``url`` holds (the object, or the objects under the prefix that ``keep``
    accepts by relative key) and return a local view of exactly them.

    The view of a prefix is a folder of links at the objects' relative keys (an object and a
    single file: a folder holding it under its name), named by the listing's digest: the same
    objects give the same view, read without any download.

    Raises:
        StorageError: as :func:`list_objects` and :func:`download`.
    """
    objects = list_objects(url, keep)
    copies = download(objects, progress=progress)
    listing = _digest(url, *(f"{o.relative}:{o.size}:{o.etag}" for o in objects))
    views = towerkit_home() / "views"
    view = views / listing[:32]
    single = len(objects) == 1 and objects[0].url == url
    if not view.exists():
        views.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(view)
        try:
            for obj in objects:
                target = staging / obj.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(copies[obj.url], target)
                except OSError:
                    shutil.copyfile(copies[obj.url], target)
            try:
                staging.rename(view)
            except OSError:  # another process made the same view meanwhile
                if not view.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    path = view / objects[0].relative if single else view
    return Fetched(path, tuple(objects), url)


# --------------------------------------------------------------------------------------------
# Writing a folder under a prefix, manifest last; reading it back
# --------------------------------------------------------------------------------------------


def _files(local: Path, skip: Callable[[str], bool] | None = None) -> list[str]:
    """The files under ``local`` (relative POSIX names), no manifest, no temporary file."""
    names = []
    for path in sorted(local.rglob("*")):
        if not path.is_file() or path.name == MANIFEST_NAME or path.name.startswith("."):
            continue
        name = path.relative_to(local).as_posix()
        if skip is None or not skip(name):
            names.append(name)
    return names


def objects_under(url: str) -> list[str]:
    """The relative keys of every object under ``url`` (none where the prefix is empty or its
    bucket holds nothing there).

    Raises:
        StorageError: no such bucket, access denied, a network failure.
    """
    fs, root = filesystem(url)
    fs.invalidate_cache(root)
    with failures(url):
        try:
            found = fs.find(root)
        except FileNotFoundError as err:
            if "bucket" in str(err):
                raise
            return []
    prefix = root.rstrip("/") + "/"
    return [p[len(prefix) :] for p in found if p.startswith(prefix)]


class Uploader:
    """Uploads a local folder's files under ``url``, each once per content (it remembers the
    sha256 it last uploaded per name: a checkpoint pushed after every epoch re-sends only what
    changed)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)
        self.sent: dict[str, str] = {}

    def _put(self, local: Path, name: str) -> None:
        target = join(self.url, name)
        with failures(target):
            self.fs.put_file(str(local), join(self.root, name))

    def push(
        self, local: Path, names: Iterable[str] | None = None, *, last: Iterable[str] = ()
    ) -> list[str]:
        """Upload the files of ``local`` (``names``, or all) whose content changed since this
        uploader last sent them; ``last``: names sent after the others (``run.json``, whose
        status must not run ahead of the files it describes). Returns the names sent."""
        names = _files(local) if names is None else list(names)
        last = [n for n in last if n in names]
        sent = []
        for name in [*(n for n in names if n not in last), *last]:
            path = local / name
            if not path.is_file():
                continue
            digest = sha256_of(path)
            if self.sent.get(name) == digest:
                continue
            self._put(path, name)
            self.sent[name] = digest
            sent.append(name)
        return sent

    def unpublish(self) -> None:
        """Remove the prefix's manifest (readers stop seeing the old content as whole)."""
        target = join(self.url, MANIFEST_NAME)
        with failures(target), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(join(self.root, MANIFEST_NAME))

    def publish(self, local: Path, *, last: Iterable[str] = (), what: str = "run") -> dict:
        """Upload every file of ``local`` not sent yet, then the manifest (every file's size
        and sha256), then remove objects under the prefix that the manifest does not list (an
        older upload's). Returns the manifest."""
        names = _files(local)
        self.push(local, names, last=last)
        manifest = {
            "format": MANIFEST_FORMAT,
            "what": what,
            "files": {
                n: {"size": (local / n).stat().st_size, "sha256": self.sent[n]} for n in names
            },
        }
        body = (json.dumps(manifest, indent=2) + "\n").encode()
        target = join(self.url, MANIFEST_NAME)
        with failures(target):
            self.fs.pipe_file(join(self.root, MANIFEST_NAME), body)
        stale = {n for n in objects_under(self.url) if PurePosixPath(n).name != MANIFEST_NAME}
        stale -= set(names)  # (the manifests of parts published on their own stay)
        for name in sorted(stale):
            with failures(join(self.url, name)), contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(join(self.root, name))
        logger.info("published %d file(s) to %s", len(names), _plain(self.url))
        return manifest


def read_manifest(url: str, what: str = "run") -> tuple[bytes, dict[str, Any]]:
    """The manifest of a published prefix, as bytes and parsed.

    Raises:
        StorageError: no manifest there (nothing published, or an upload not finished), or
            one that is not a towerkit manifest.
    """
    fs, root = filesystem(url)
    target = join(url, MANIFEST_NAME)
    try:
        with failures(target):
            body = fs.cat_file(join(root, MANIFEST_NAME))
    except StorageError as err:
        if not str(err).endswith(": no such key"):
            raise
        raise StorageError(
            f"{_plain(url)}: no {MANIFEST_NAME}: not a finished {what} (nothing is there, or "
            "its upload is unfinished or under way)"
        ) from None
    try:
        manifest = json.loads(body)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise StorageError(f"{_plain(target)}: not a towerkit manifest") from None
    for name in files:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts:
            raise StorageError(f"{_plain(target)}: lists {name!r}, not a file under the prefix")
    return body, manifest


def _slug(url: str) -> str:
    """A folder name for a URL: readable, and unique by its digest."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", _plain(url))[-80:].strip("_")
    return f"{readable}-{_digest(url)[:12]}"


def pull(url: str, *, what: str = "run") -> Path:
    """A local snapshot of the prefix published at ``url``, each file checked against the
    manifest's sha256. Snapshots are named by the manifest's digest: a prefix that did not
    change is not downloaded again, one that did (a newer export) comes as a new snapshot
    beside the old one (which a server may still be serving).

    Raises:
        StorageError: no manifest, a file that does not match it, a failure of the store.
    """
    body, manifest = read_manifest(url, what)
    home = towerkit_home() / "remote" / _slug(url)
    snapshot = home / hashlib.sha256(body).hexdigest()[:16]
    if (snapshot / MANIFEST_NAME).exists():
        return snapshot
    home.mkdir(parents=True, exist_ok=True)
    fs, root = filesystem(url)
    files = manifest["files"]
    staging = staging_dir(snapshot)
    try:
        names = sorted(files)
        for name in names:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
        if names:
            logger.info("downloading %s (%d files)", _plain(url), len(names))
            _get_many(fs, [(join(url, n), join(root, n), staging / n) for n in names])
        for name in names:
            path = staging / name
            if not path.is_file() or sha256_of(path) != files[name]["sha256"]:
                raise StorageError(
                    f"{_plain(join(url, name))}: does not match the manifest's sha256 (the "
                    f"{what} changed while being read?); try again"
                )
        (staging / MANIFEST_NAME).write_bytes(body)
        try:
            staging.rename(snapshot)
        except OSError:
            if not (snapshot / MANIFEST_NAME).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(home, keep=snapshot)
    return snapshot


def _prune(home: Path, keep: Path) -> None:
    """Remove all but the newest :data:`SNAPSHOTS_KEPT` snapshots of one URL."""
    snapshots = sorted(
        (p for p in home.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in snapshots[SNAPSHOTS_KEPT:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def work_path(url: str) -> Path:
    """The local folder a run (or study) whose home is ``url`` is written in before upload:
    ``$TOWERKIT_HOME/work/…``."""
    return towerkit_home() / "work" / _slug(url)


def working_copy(url: str) -> Path:
    """:func:`work_path`, emptied (what a crashed attempt left there goes)."""
    path = work_path(url)
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def download_prefix(url: str, local: Path, skip: Callable[[str], bool] | None = None) -> list[str]:
    """Download every object under ``url`` (but the manifest) into ``local`` (an unfinished run
    to resume: no manifest vouches for it; the run's own records check its files). Returns the
    relative names.

    Raises:
        StorageError: nothing under ``url``, or a failure of the store.
    """
    names = [n for n in objects_under(url) if n != MANIFEST_NAME and not (skip and skip(n))]
    if not names:
        raise StorageError(f"{_plain(url)}: nothing there")
    fs, root = filesystem(url)
    for name in names:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
    _get_many(fs, [(join(url, n), join(root, n), local / n) for n in names])
    return names


def remove_prefix(url: str) -> None:
    """Delete every object under ``url`` (a new run that kept nothing); failures are logged,
    not raised (the caller is reporting another error already)."""
    try:
        fs, root = filesystem(url)
        with failures(url):
            names = objects_under(url)
            if names:
                fs.rm([join(root, n) for n in names])
    except StorageError as err:  # (the next run at the prefix removes it)
        logger.info("could not remove what was uploaded: %s", err)
