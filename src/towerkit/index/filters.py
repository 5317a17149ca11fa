"""Filters on item attributes: one expression, answered by every index back end.

A filter is written in the boolean-expression syntax of Milvus, the subset that every back end
can answer the same way::

    label == "Comedy"
    label in ["Comedy", "Drama"] and count >= 100
    not (title == "Heat (1995)") or 10 <= count < 50

comparisons (``== != < <= > >=``, chained ranges), ``in`` / ``not in`` a list, ``and``, ``or``,
``not`` and parentheses over the item table's columns (a run's ``items.parquet``: ``item``,
``title``, ``count``, ``label``), with string and number literals. :func:`parse_filter` checks
it against the columns once; :meth:`ItemFilter.mask` evaluates it over the table (the exact,
Faiss and Annoy back ends search only the rows it keeps) and :attr:`ItemFilter.expression` is
the same filter as Milvus reads it (the Milvus back end hands it to the database).
"""

from __future__ import annotations

import ast
import json
import operator
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from towerkit.errors import TowerkitError

if TYPE_CHECKING:
    import pandas as pd


class FilterError(TowerkitError, ValueError):
    """A filter that cannot be read, or that names a column the items do not have."""


_COMPARE: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
#: the deepest nesting read (levels of nodes: a comparison inside 10 and/or/not is about 15)
MAX_DEPTH = 100
SYNTAX = (
    'comparisons (label == "Comedy", count >= 100, 10 <= count < 50), '
    'label in ["Comedy", "Drama"], and / or / not, parentheses'
)


@dataclass(frozen=True)
class ItemFilter:
    """A parsed filter (see the module docstring).

    Attributes:
        text: the filter as given.
        expression: the same filter in Milvus's syntax (strings double-quoted).
        columns: the item columns it reads.
    """

    text: str
    expression: str
    columns: tuple[str, ...]
    _tree: ast.expr

    def mask(self, table: pd.DataFrame) -> np.ndarray:
        """One boolean per row of ``table``: the rows the filter keeps (a missing value never
        matches a comparison)."""
        missing = sorted(set(self.columns) - set(table.columns))
        if missing:
            raise FilterError(
                f"filter {self.text!r}: unknown item attribute(s) {', '.join(missing)}; "
                f"the items have: {', '.join(map(str, table.columns))}"
            )
        out = _evaluate(self._tree, table, self.text)
        return np.broadcast_to(np.asarray(out, dtype=bool), (len(table),)).copy()

    def __str__(self) -> str:
        return self.expression


def parse_filter(text: str, columns: Iterable[str] | None = None) -> ItemFilter:
    """Read a filter; with ``columns``, also check that it names only those.

    Raises:
        FilterError: not valid filter syntax (the message says what is allowed), or a column
            that is not one of ``columns``.
    """
    if not isinstance(text, str) or not text.strip():
        raise FilterError('the filter is empty; write e.g. label == "Comedy"')
    try:
        with warnings.catch_warnings():  # Python's own ("invalid decimal literal" for 5and)
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise FilterError(f"filter {_cut(text)!r} is not valid: use {SYNTAX}") from None
    except (RecursionError, MemoryError):  # Python's parser gives up on deep nesting
        raise FilterError(
            f"filter {_cut(text)!r} nests more than {MAX_DEPTH} levels deep"
        ) from None
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        raise FilterError(
            f"filter {_cut(text)!r} nests {depth} levels deep; at most {MAX_DEPTH} are read"
        )
    names: list[str] = []
    expression = _render(tree, text, names)
    if not names:
        raise FilterError(f"filter {text!r} names no item attribute")
    used = tuple(dict.fromkeys(names))
    if columns is not None:
        known = list(columns)
        unknown = [name for name in used if name not in known]
        if unknown:
            raise FilterError(
                f"filter {text!r}: unknown item attribute(s) {', '.join(unknown)}; "
                f"the items have: {', '.join(known)}"
            )
    return ItemFilter(text, expression, used, tree)


def _depth(tree: ast.expr) -> int:
    """How deep the expression nests (its nodes counted on the longest path), without
    recursion: a filter of a thousand nested ``not`` must not exhaust the stack."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _cut(text: str, width: int = 80) -> str:
    """The start of a long filter, for a message that stays one readable line."""
    return text if len(text) <= width else text[:width] + "..."


def _literal(node: ast.expr, text: str) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, text)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    constant = isinstance(node, ast.Constant) and isinstance(node.value, str | int | float)
    if constant and not isinstance(node.value, bool):  # True is an int to isinstance
        return node.value
    raise FilterError(
        f"filter {text!r}: {ast.unparse(node)} is not a string or a number; use {SYNTAX}"
    )


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _render(node: ast.expr, text: str, names: list[str]) -> str:
    """The Milvus expression of a node (checking it on the way)."""
    if isinstance(node, ast.BoolOp):
        word = " and " if isinstance(node.op, ast.And) else " or "
        return "(" + word.join(_render(v, text, names) for v in node.values) + ")"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return f"not ({_render(node.operand, text, names)})"
    if isinstance(node, ast.Compare):
        left, parts = _operand(node.left, text, names), []
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                if len(node.ops) != 1 or not isinstance(node.left, ast.Name):
                    raise FilterError(f"filter {text!r}: write `column in [values]` on its own")
                if not isinstance(right, ast.List | ast.Tuple):
                    raise FilterError(f'filter {text!r}: `in` takes a list, e.g. ["a", "b"]')
                values = ", ".join(_show(_literal(v, text)) for v in right.elts)
                word = "in" if isinstance(op, ast.In) else "not in"
                return f"{left} {word} [{values}]"
            if type(op) not in _COMPARE:
                raise FilterError(f"filter {text!r}: {ast.unparse(node)}: use {SYNTAX}")
            right_text = _operand(right, text, names)
            parts.append(f"{left} {_COMPARE[type(op)][0]} {right_text}")
            left = right_text
        if not any(isinstance(n, ast.Name) for n in (node.left, *node.comparators)):
            raise FilterError(f"filter {text!r}: {ast.unparse(node)} compares no attribute")
        # a chained range (10 <= count < 50) as the pairs it means, which Milvus reads
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"
    raise FilterError(f"filter {text!r}: {ast.unparse(node)} is not allowed; use {SYNTAX}")


def _operand(node: ast.expr, text: str, names: list[str]) -> str:
    if isinstance(node, ast.Name):
        names.append(node.id)
        return node.id
    return _show(_literal(node, text))


def _evaluate(node: ast.expr, table: pd.DataFrame, text: str) -> Any:
    if isinstance(node, ast.BoolOp):
        values = [np.asarray(_evaluate(v, table, text), dtype=bool) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return combine.reduce(np.broadcast_arrays(*values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~np.asarray(_evaluate(node.operand, table, text), dtype=bool)
    assert isinstance(node, ast.Compare)  # parse_filter allowed nothing else
    if isinstance(node.ops[0], ast.In | ast.NotIn):
        column = table[node.left.id]
        inside = column.isin([_literal(v, text) for v in node.comparators[0].elts]).to_numpy()
        return inside if isinstance(node.ops[0], ast.In) else ~inside & column.notna().to_numpy()
    out: Any = True
    left = _value(node.left, table, text)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _value(right_node, table, text)
        out = out & _compare(_COMPARE[type(op)][1], left, right, text)
        left = right
    return out


def _value(node: ast.expr, table: pd.DataFrame, text: str) -> Any:
    if isinstance(node, ast.Name):
        return table[node.id]
    return _literal(node, text)


def _compare(op: Callable[[Any, Any], Any], left: Any, right: Any, text: str) -> np.ndarray:
    """``op`` elementwise; a string compared with a number is an error naming the filter."""
    import pandas as pd

    for side, other in ((left, right), (right, left)):
        if isinstance(side, pd.Series) and not isinstance(other, pd.Series):
            numeric = pd.api.types.is_numeric_dtype(side.dtype)
            if numeric != (isinstance(other, int | float) and not isinstance(other, str)):
                kind = "a number" if numeric else "text"
                raise FilterError(
                    f"filter {text!r}: {side.name} is {kind}; compared with {_show(other)}"
                )
    if isinstance(left, pd.Series) and isinstance(right, pd.Series):
        kinds = [pd.api.types.is_numeric_dtype(side.dtype) for side in (left, right)]
        if kinds[0] != kinds[1]:
            described = [f"{s.name} is {'a number' if k else 'text'}"
                         for s, k in zip((left, right), kinds, strict=True)]  # fmt: skip
            raise FilterError(f"filter {text!r}: {described[0]}, {described[1]}")
    try:
        result = op(left, right)
    except TypeError as err:  # values of one column pandas cannot order (mixed kinds)
        raise FilterError(f"filter {text!r}: cannot compare these values ({err})") from None
    if not isinstance(result, pd.Series):
        return np.asarray(result, dtype=bool)
    # a missing value never matches, ``!=`` included (pandas says NaN != x; Milvus says no)
    out = result.fillna(False).to_numpy(dtype=bool, copy=True)
    for side in (left, right):
        if isinstance(side, pd.Series):
            out &= side.notna().to_numpy()
    return out


__all__ = ["FilterError", "ItemFilter", "parse_filter"]
