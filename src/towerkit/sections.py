"""The building blocks of the typed configuration: a strict section, and unions of sections
told apart by a tag key. Neutral ground: the config package assembles sections from here and
from the components that own them (each model file owns its ``model`` section), so no
component imports the config package.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Tag


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, and no NaN or
    infinity anywhere (``lr: .inf`` would pass as a "positive" number and train to NaN)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: Each tagged union's member classes -> (the key holding the tag, members by tag): how the
#: error explainer names a key inside a union member.
UNIONS: dict[tuple[type, ...], tuple[str, dict[str, type[Section]]]] = {}


def tagged(key: str, default: str, *members: type[Section]) -> Any:
    """A union of sections told apart by ``key`` (``default`` when the key is left out)."""
    by_tag = {member.model_fields[key].default: member for member in members}

    def tag(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get(key, default)
        return getattr(value, key, None)

    UNIONS[members] = (key, by_tag)
    options = tuple(Annotated[member, Tag(name)] for name, member in by_tag.items())
    return Annotated[typing.Union[options], Discriminator(tag)]  # noqa: UP007
