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
