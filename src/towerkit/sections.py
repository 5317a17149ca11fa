"""The building blocks of the typed configuration: a strict section, and unions of sections
told apart by a tag key. Neutral ground: the config package assembles sections from here and
from the components that own them (each model file owns its ``model`` section), so no
component imports the config package.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

#: Upper bounds of the config's sizes: far above any real run, and low enough that no value
#: within them fails inside numpy or torch before the memory estimates of
#: :mod:`towerkit.runs.budget` (which know the data's sizes) can say what it would cost.
MAX_WIDTH = 1 << 16  # a vector or layer width: embedding_dim, hidden, ffn_dim, ...
MAX_LENGTH = 1 << 20  # positions, negatives, rows of a batch, K
MAX_LAYERS = 256  # stacked layers, heads, interests, routing iterations
MAX_SEED = 2**32 - 1  # every seed fits numpy's legacy and Optuna's 32-bit seeds


def unbounded(why: str) -> dict[str, str]:
    """The mark of a numeric key that has no sane upper bound, saying why (pass it as a
    field's ``json_schema_extra``). A test walks every numeric key of the schema and fails on
    one with neither an upper bound nor this mark.

    Example::

        patience: int = Field(default=3, ge=0, json_schema_extra=unbounded("epochs"))
    """
    return {"unbounded": why}


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, and no NaN or
    infinity anywhere (``lr: .inf`` would pass as a "positive" number and train to NaN)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @classmethod
    def default(cls, key: str) -> Any:
        """The default of ``key``: what a constructor that also takes the section's keys one
        by one uses, so that each default is written once, in its section.

        Example::

            def __init__(self, n_items: int, *, n_heads: int = SASRecConfig.default("n_heads"))
        """
        return cls.model_fields[key].get_default(call_default_factory=True)


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
