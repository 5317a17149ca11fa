"""Exceptions raised at towerkit's boundaries.

Every error a user can cause (a bad file, an unknown column, a config typo) is raised as one of
these with a message that names the problem and, where possible, what would fix it. The CLI turns
them into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class TowerkitError(Exception):
    """Base class of towerkit's own errors."""


class DataError(TowerkitError, ValueError):
    """Input data that cannot be used: the message names the file, line or column at fault."""


class FetchError(TowerkitError):
    """A data set could not be fetched from any of its sources."""
