"""Exceptions raised at towerkit's boundaries.

Every error a user can cause (a bad file, an unknown column, a config typo, an id the model never
saw) is raised as one of these with a message that names the problem and, where possible, what
would fix it. The CLI turns them (and the machine's own ``OSError``: a full disk, a missing file)
into one line on stderr and a non-zero exit; any other exception is a bug in towerkit and is shown
as one ("internal error", with its traceback under ``-v``).
"""

from __future__ import annotations


class TowerkitError(Exception):
    """Base class of towerkit's own errors."""


class DataError(TowerkitError, ValueError):
    """Input data that cannot be used: the message names the file, line or column at fault."""


class FetchError(TowerkitError):
    """A data set could not be fetched from any of its sources."""


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
