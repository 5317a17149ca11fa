"""Hive-style partitions of a log (``events/dt=2026-12-01/part-0.parquet``): the values a
shard's folders name, and the filter that keeps the shards of the partitions asked for.

The filter runs on the shards' relative paths before any of them is read, locally or in a
bucket (where the others are then never downloaded). A partition's value is compared as a
number where both sides are numbers (``hour=9`` before ``hour=10``), else as text (ISO dates
sort as text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any


def partition_values(relative: str) -> dict[str, str]:
    """The ``key=value`` folders of a shard's path relative to the log's root."""
    values = {}
    for part in PurePosixPath(relative).parts[:-1]:
        key, sep, value = part.partition("=")
        if sep and key:
            values[key] = value
    return values


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _order(a: str, b: str) -> int:
    """-1, 0 or 1 as partition value ``a`` sorts before, with or after ``b``."""
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return (x > y) - (x < y)
    return (a > b) - (a < b)


def _matches(value: str, wanted: Mapping[str, Any]) -> bool:
    if "in" in wanted:
        return any(_order(value, v) == 0 for v in wanted["in"])
    low, high = wanted.get("min"), wanted.get("max")
    return (low is None or _order(value, low) >= 0) and (high is None or _order(value, high) <= 0)


def partition_filter(spec: Mapping[str, Mapping[str, Any]] | None) -> Callable[[str], bool] | None:
    """A predicate on a shard's relative path: every partition named in ``spec`` (``{column:
    {"in": [values]}}`` or ``{column: {"min": a, "max": b}}``, bounds inclusive) must be in
    the shard's folders with a value asked for. None where ``spec`` asks for nothing."""
    if not spec:
        return None

    def keep(relative: str) -> bool:
        values = partition_values(relative)
        return all(key in values and _matches(values[key], wanted) for key, wanted in spec.items())

    return keep


def describe(spec: Mapping[str, Mapping[str, Any]]) -> str:
    """The filter in a few words, for a message."""
    parts = []
    for key, wanted in spec.items():
        if "in" in wanted:
            parts.append(f"{key} in {', '.join(map(str, wanted['in']))}")
        else:
            low, high = wanted.get("min"), wanted.get("max")
            parts.append(f"{key} from {low if low is not None else '-'} to "
                         f"{high if high is not None else '-'}")  # fmt: skip
    return "; ".join(parts)
