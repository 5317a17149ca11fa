"""Validation errors as lines that name the key as the user wrote it (union tags dropped, the
keys allowed where an unknown one was given)."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError

from towerkit.errors import TowerkitError
from towerkit.sections import UNIONS, Section


class ConfigError(TowerkitError, ValueError):
    """A configuration that cannot be used; the message names the key and the fix.

    Attributes:
        problems: one line per problem, without the source (for a caller that names it).
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def _union_of(model: type[BaseModel], key: str) -> tuple[str, dict[str, type[Section]]] | None:
    """The (tag key, members by tag) of field ``key`` of ``model`` if it is a tagged union."""
    field = model.model_fields.get(key)
    members = typing.get_args(getattr(field, "annotation", None))
    classes = tuple(typing.get_args(m)[0] if typing.get_args(m) else m for m in members)
    return UNIONS.get(classes)


def _walk(
    loc: tuple, root: type[BaseModel]
) -> tuple[list[str], type[BaseModel] | None, str | None]:
    """Follow an error location through the config's sections.

    Returns the path as the user wrote it (union tags dropped), the section class holding its
    last key, and the tag of that section when it is a member of a tagged union.
    """
    model: type[BaseModel] | None = root
    path: list[str] = []
    parent, tag = root, None
    items = list(loc)
    while items:
        key = str(items.pop(0))
        path.append(key)
        parent = model
        if model is None or key not in model.model_fields:
            model = None
            continue
        union = _union_of(model, key)
        if union is not None and items and str(items[0]) in union[1]:
            tag = str(items.pop(0))
            model = union[1][tag]
            continue
        annotation = model.model_fields[key].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model, tag = (annotation, None) if is_section else (None, tag)
    return path, parent, tag


def explain(error: ValidationError, source: str, root: type[BaseModel]) -> ConfigError:
    """The error as ``SOURCE: KEY: PROBLEM``, one line; several problems as ``SOURCE: invalid
    configuration:`` and a line each (see :func:`explain_lines`)."""
    lines = explain_lines(error, root)
    if len(lines) == 1:
        return ConfigError(f"{source}: {lines[0]}", lines)
    return ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines), lines)


def explain_lines(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per error, naming the key as the user wrote it."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path, parent, tag = _walk(loc, root)
        where = ".".join(path) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(parent.model_fields) if parent is not None else ""
            whose = f" for {tag}" if tag else ""
            lines.append(f"{where}: unknown key{whose}; allowed here: {allowed}")
        elif item["type"] == "union_tag_invalid":
            key, members = _union_of(parent, path[-1]) if parent else ("", {})
            lines.append(
                f"{where}.{key}: unknown {path[-1]} {key} {item['ctx']['tag']!r}; use one of: "
                f"{', '.join(members)}"
            )
        elif item["type"] == "union_tag_not_found":
            lines.append(f"{where}: expected a section (a mapping), got {item.get('input')!r}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            if not path:  # a cross-field check: its message names the keys
                lines.append(message)
                continue
            shown = item.get("input")
            got = f" (got {shown!r})" if not isinstance(shown, dict) else ""
            lines.append(f"{where}: {message}{got}")
    return lines
