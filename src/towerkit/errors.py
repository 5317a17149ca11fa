"""Exceptions raised at towerkit's boundaries.

Every error a user can cause (a bad file, an unknown column, a config typo, an id the model never
saw) is raised as one of these with a message that names the problem and, where possible, what
would fix it. The CLI turns them (and the machine's own ``OSError``: a full disk, a missing file)
into one line on stderr and a non-zero exit; any other exception is a bug in towerkit and is shown
as one ("internal error", with its traceback under ``-v``). What a dependency raises on bad
input (SQLite, Arrow, MLflow, Milvus, a decoder) is listed in :data:`INPUT_ERRORS`, and
:func:`naming` turns it into one of these where the input enters.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator


class TowerkitError(Exception):
    """Base class of towerkit's own errors."""


class DataError(TowerkitError, ValueError):
    """Input data that cannot be used: the message names the file, line or column at fault."""


class FetchError(TowerkitError):
    """A data set could not be fetched from any of its sources."""


class StorageError(TowerkitError):
    """Object storage (a bucket) that cannot be read or written: one line naming the object's
    URL (bucket and key) and the reason (no such bucket or key, access denied, a network
    failure, a request still throttled after its retries)."""


class UnknownError(TowerkitError, KeyError):
    """An id, a side-feature value or a name that towerkit was never given (a user id the model
    never saw, an unknown data set). A ``KeyError``, so ``str()`` quotes the message: show
    ``err.args[0]``."""


class MissingExtra(TowerkitError, ImportError):
    """An optional part is not installed; the message names the pip command that installs it."""


class RunStopped(TowerkitError):
    """Training ended before its end and the process should exit with ``exit_code``; the
    message (possibly empty: said already) says what was kept and how to resume."""

    exit_code = 1


class RunInterrupted(RunStopped):
    """Training was stopped by Ctrl-C or SIGTERM; the message says what was kept and how to
    resume (empty on the processes that are not rank 0). Exit status 130."""

    exit_code = 130


class WorkersFailed(RunStopped):
    """The processes launched under torchrun ended with ``exit_code`` (they said why)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


#: What each exception a dependency raises on bad input says about that input, by the module and
#: name of its class (names, so that this module imports no dependency). :func:`input_reason`
#: finds an exception's entry through its class's bases; :func:`naming` turns one into a
#: towerkit error naming the file, key or field at fault. Anything else that escapes a command
#: is a bug in towerkit, and the CLI says so ("internal error").
INPUT_ERRORS: dict[str, str] = {
    "sqlite3.DatabaseError": "not a database SQLite can read",
    "sqlalchemy.exc.DatabaseError": "not a database SQLite can read",
    "pyarrow.lib.ArrowException": "not a file Arrow can read",
    "builtins.RecursionError": "nested too deeply",
    "mlflow.exceptions.MlflowException": "refused by MLflow",
    "pymilvus.exceptions.MilvusException": "refused by Milvus",
    "builtins.UnicodeError": "not text in the expected encoding",
    "json.decoder.JSONDecodeError": "not valid JSON",
    "yaml.error.YAMLError": "not valid YAML",
}


def input_reason(err: BaseException) -> str | None:
    """What ``err`` says about the input (:data:`INPUT_ERRORS`), or None: not an input error."""
    for cls in type(err).__mro__:
        reason = INPUT_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if reason is not None:
            return reason
    return None


def detail(err: BaseException) -> str:
    """The first line of a dependency's message (SQLAlchemy's cause without its background
    link; Arrow's without the path it repeats)."""
    text = str(getattr(err, "orig", None) or err).strip()
    text = re.sub(r"Could not open \w+ input source '[^']*': ", "", text)
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def naming(what: str, error: type[TowerkitError] | None = None, advice: str = "") -> Iterator[None]:
    """Within the block, an exception of :data:`INPUT_ERRORS` becomes ``error`` (by default a
    :class:`DataError`) with one line: ``WHAT: REASON (DETAIL)`` and ``advice``; towerkit's own
    errors and anything else pass through unchanged.

    ::

        with naming(f"{path}"):
            table = pq.read_table(path)
    """
    try:
        yield
    except TowerkitError:
        raise
    except Exception as err:
        reason = input_reason(err)
        if reason is None:
            raise
        error = error or DataError
        raise error(f"{what}: {reason} ({detail(err)}){advice}") from err
