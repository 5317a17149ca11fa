"""Every numeric key of the schema has a bound or says why it has none, and an absurd value of
any of them is one line naming the key, before any data is read."""

from __future__ import annotations

import copy
import math
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from towerkit.config import Config, ConfigError, config_from_dict
from towerkit.config.explain import _union_of
from towerkit.sections import Section
from towerkit.tune import Space, TuneError, read_space

ABSURD_INT = (0, -1, 10**12)
ABSURD_FLOAT = (0.0, -1.0, 1e12, math.nan)


@dataclass(frozen=True)
class NumericKey:
    path: tuple[str, ...]  # as the user writes it
    kind: type  # int or float
    info: FieldInfo  # the field, or the list element's constraints
    in_list: bool
    base: dict = field(default_factory=dict)  # the tree that selects its section (tags)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def upper(self) -> float | None:
        for meta in self.info.metadata:
            if isinstance(meta, annotated_types.Le):
                return meta.le
            if isinstance(meta, annotated_types.Lt):
                return meta.lt
        return None


def _scalar(annotation: Any) -> tuple[type | None, FieldInfo | None, bool]:
    """(int or float, the element's constraints when a list, whether a list) of an annotation;
    (None, ...) for anything else."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if len(args) == 1:
            return _scalar(args[0])
        return None, None, False
    if typing.get_origin(annotation) is list:
        element = args[0]
        if typing.get_origin(element) is typing.Annotated:
            kind, *meta = typing.get_args(element)
            info = next((m for m in meta if isinstance(m, FieldInfo)), FieldInfo())
        else:
            kind, info = element, FieldInfo()
        return (kind if kind in (int, float) else None), info, True
    return (annotation if annotation in (int, float) else None), None, False


def _walk(model: type[BaseModel], path=(), base=None) -> Iterator[NumericKey]:
    """Every numeric key under ``model``, through nested sections and tagged unions."""
    base = base or {}
    for name, info in model.model_fields.items():
        here = (*path, name)
        union = _union_of(model, name)  # how the error explainer finds a tagged union
        if union is not None:
            key, by_tag = union
            for tag, member in by_tag.items():
                yield from _walk(member, here, _with(base, (*here, key), tag))
            continue
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _walk(info.annotation, here, base)
            continue
        kind, element, in_list = _scalar(info.annotation)
        if kind is not None:
            yield NumericKey(here, kind, element or info, in_list, base)


def _with(tree: dict, path: tuple[str, ...], value: Any) -> dict:
    """A copy of ``tree`` with ``value`` at ``path``."""
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return tree


def _sections() -> list[type[Section]]:
    found, todo = [], [Section]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


CONFIG_KEYS = list(_walk(Config))
#: keys the walk must find, so that it cannot silently walk nothing
EXPECTED = {
    "data.max_len",
    "negatives.n",
    "train.batch_size",
    "model.embedding_dim",
    "model.hidden",
    "eval.ks",
    "eval.batch_size",
    "train.windows",
    "model.ffn_dim",
    "data.split.seed",
    "temperature.value",
}


def test_the_walk_finds_the_keys_it_must():
    assert {key.dotted for key in CONFIG_KEYS} >= EXPECTED
    assert len(CONFIG_KEYS) > 50


@pytest.mark.parametrize("section", _sections(), ids=lambda cls: cls.__name__)
def test_every_numeric_key_is_bounded_or_marked_unbounded(section):
    """A new numeric key without ``le``/``lt`` or ``json_schema_extra=unbounded(why)`` fails."""
    for name, info in section.model_fields.items():
        kind, element, _ = _scalar(info.annotation)
        if kind is None:
            continue
        key = NumericKey((name,), kind, element or info, False)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        reason = extra.get("unbounded")
        assert key.upper is not None or (isinstance(reason, str) and reason), (
            f"{section.__name__}.{name}: a numeric key needs an upper bound (le=/lt=) or "
            "json_schema_extra=unbounded('why there is none')"
        )


def _tree(key: NumericKey, value: Any) -> dict:
    tree = _with(key.base, key.path, [value] if key.in_list else value)
    split = tree.get("data", {}).get("split", {})
    if split.get("kind") == "temporal":  # its one required key, so that the member validates
        split.setdefault("test_start", 10**9)
    return tree


@pytest.mark.parametrize("key", CONFIG_KEYS, ids=lambda key: f"{key.dotted}[{key.base}]")
def test_an_absurd_value_of_every_config_key_is_one_line_naming_it(key):
    for value in ABSURD_INT if key.kind is int else ABSURD_FLOAT:
        tree = _tree(key, value)
        started = time.perf_counter()
        try:
            config = config_from_dict(tree)
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message, message
            assert key.dotted in message or key.path[-1] in message, (key.dotted, message)
            assert "Traceback" not in message
        else:
            if isinstance(value, float) and math.isnan(value):
                pytest.fail(f"{key.dotted}: NaN was accepted")
            if value == 10**12 or value == 1e12:
                assert key.upper is None or key.upper >= 1e12, f"{key.dotted}: 1e12 accepted"
            assert isinstance(config, Config)
        assert time.perf_counter() - started < 5


SPACE_KEYS = list(_walk(Space))


def test_the_space_walk_finds_its_keys():
    assert {"budget.min_epochs", "budget.reduction_factor", "sampler.seed"} <= {
        key.dotted for key in SPACE_KEYS
    }


@pytest.mark.parametrize("key", SPACE_KEYS, ids=lambda key: key.dotted)
def test_an_absurd_value_of_every_space_key_is_one_line_naming_it(key, tmp_path):
    import yaml

    for value in ABSURD_INT if key.kind is int else ABSURD_FLOAT:
        tree = _with({"params": {"train.lr": {"low": 1e-4, "high": 1e-2}}}, key.path, value)
        path = tmp_path / "space.yaml"
        path.write_text(yaml.safe_dump(tree))
        try:
            read_space(path)
        except TuneError as err:
            message = str(err)
            assert "\n" not in message and key.dotted in message, message
        else:
            assert not (isinstance(value, float) and math.isnan(value)), key.dotted
            if value in (10**12, 1e12):
                assert key.upper is None or key.upper >= 1e12, f"{key.dotted}: 1e12 accepted"


def _index_options() -> list[tuple[str, str, type]]:
    """(index kind, option, int or float) of every numeric constructor option."""
    from towerkit.index import INDEXES, index_options

    found = []
    for kind, cls in INDEXES.items():
        hints: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            init = base.__dict__.get("__init__")
            if init is not None:
                hints.update(typing.get_type_hints(init))
        for name in index_options(kind):
            kind_of, _, _ = _scalar(hints.get(name))
            if kind_of is not None:
                found.append((kind, name, kind_of))
    return found


INDEX_OPTIONS = _index_options()


def test_every_numeric_index_option_has_a_range():
    from towerkit.index import INDEXES

    assert {("annoy", "n_trees"), ("faiss-hnsw", "ef_search"), ("milvus", "timeout")} <= {
        (kind, name) for kind, name, _ in INDEX_OPTIONS
    }
    missing = sorted(
        (kind, name) for kind, name, _ in INDEX_OPTIONS if name not in INDEXES[kind].option_ranges()
    )
    assert not missing, f"add ranges for {missing} to each back end's ranges"


@pytest.mark.parametrize(("kind", "name", "number"), INDEX_OPTIONS, ids=lambda v: str(v))
def test_an_absurd_index_option_is_one_line_naming_it(kind, name, number):
    from towerkit.index import INDEXES

    ranges = INDEXES[kind].option_ranges()
    for value in ABSURD_INT if number is int else ABSURD_FLOAT:
        tree = {"eval": {"index": kind, "index_options": {name: number(value)}}}
        try:
            config = config_from_dict(tree)
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message and name in message, message
        else:
            assert not math.isnan(value), (kind, name)
            assert value != 10**12 or ranges[name][1] >= 1e12, (kind, name)
            assert config.eval.index_options == {name: value}
