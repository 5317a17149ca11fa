"""Writing files so that nothing half-written is ever read, and cleaning up after a crash.

Every temporary name carries the writing process's id: ``.NAME.PID.RANDOM.part`` files and
``.NAME-staging-PID-RANDOM`` folders. A process killed mid-write (SIGKILL, a power cut) cannot
remove its own; the next writer in the same folder removes those whose process is gone.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_PID = re.compile(r"[.-](\d+)[.-]")


def towerkit_home() -> Path:
    """``$TOWERKIT_HOME``, or ``~/.cache/towerkit``: known data sets, and the local copies of
    objects read from a bucket."""
    return Path(os.environ.get("TOWERKIT_HOME") or Path.home() / ".cache" / "towerkit")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale(directory: Path, prefix: str) -> None:
    """Remove temporary files and folders named ``PREFIX...PID...`` in ``directory`` whose
    writing process no longer runs."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _PID.search(entry.name[len(prefix) - 1 :])
        if match is not None:
            _remove_if_orphaned(entry, int(match.group(1)))


def _remove_if_orphaned(entry: Path, pid: int) -> None:
    """Remove ``entry`` (a file or a folder) when the process ``pid`` that wrote it is gone."""
    if pid_alive(pid):
        return
    logger.info("removing %s, left by a process that ended while writing", entry)
    if entry.is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def os_reason(err: OSError) -> str:
    """What went wrong, in the system's words (``No space left on device``), also where a
    library wrapped it in its own (pyarrow's ``Error writing bytes to file ... errno 28``)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return os.strerror(err.errno)
    return err.strerror or str(err)


def named(err: OSError, path: Path | str) -> OSError:
    """``err`` naming ``path`` when it names no file (``torch.save`` and pyarrow write through
    file objects): the CLI's one line then says which file could not be written."""
    if err.filename:
        return err
    return type(err)(err.errno, os_reason(err), str(path))


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks (a data set's download, a run's or an export's
    files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: Path) -> None:
    """Refuse, before any work, a file that could not be written at ``path``: a directory
    there, a folder that does not exist, a folder this process cannot write in. (The write
    itself goes through :func:`atomic_write`; this is the check that spares the work.)

    Raises:
        OSError: naming ``path``, never the temporary file a write would use.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"no folder {path.parent}", str(path))
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot write in {path.parent}", str(path))


def current_umask() -> int:
    """This process's umask, read without changing it where the system says it
    (``/proc/self/status``); elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it into place: readers
    see the old file or the new one, never a part (a full disk leaves the old one).

    Raises:
        OSError: naming ``path`` (see :func:`named`).
    """
    prefix = f".{path.name}."
    try:
        remove_stale(path.parent, prefix)
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f"{prefix}{os.getpid()}.", suffix=".part"
        )
    except OSError as err:
        raise named(err, path) from None
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); the file put in place has the mode any new
        # file gets here (0644 under the usual umask), so another account can read a run
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as err:
        raise named(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)


#: the temporary names of this module: ``.NAME-staging-PID-RANDOM`` and ``.NAME.PID.RANDOM.part``
_ORPHAN = re.compile(r"^\..+?(?:-staging-(\d+)-[^.]*|\.(\d+)\.[^.]+\.part)$")


def remove_orphans(directory: Path) -> None:
    """Remove every temporary file and folder of this module in ``directory`` whose writing
    process no longer runs, whatever it was writing: a run killed while staging an export to
    one name leaves nothing behind once anything is staged beside it again."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        match = _ORPHAN.match(entry.name)
        if match is not None:
            _remove_if_orphaned(entry, int(match.group(1) or match.group(2)))


def staging_dir(target: Path) -> Path:
    """A new empty folder beside ``target`` to build it in, then rename into place (what
    ended processes left in the folder is removed first)."""
    remove_orphans(target.parent)
    prefix = f".{target.name}-staging-"
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{prefix}{os.getpid()}-"))
    os.chmod(folder, 0o777 & ~current_umask())  # mkdtemp's 0700 would make the result private
    return folder
