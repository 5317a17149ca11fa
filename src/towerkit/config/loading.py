"""YAML in, a validated :class:`~towerkit.config.Config` out: files, ``--set`` overrides, and
data paths relative to the config's folder."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from towerkit.config.explain import ConfigError, explain
from towerkit.config.schema import Config
from towerkit.storage import is_url


def set_key(tree: dict, dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted`` ``"a.b"`` (sections made as needed)."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.epochs=3", "model.hidden=[128, 64]"]`` -> typed (key, value) pairs (YAML)."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        pairs.append((key.strip(), value))
    return pairs


def config_from_dict(
    tree: dict, overrides: list[str] = (), source: str = "config", *, machine: bool = True
) -> Config:
    """Validate a config tree (with ``KEY=VALUE`` overrides applied).

    Args:
        machine: check the machine's settings against this machine (a device it lacks is an
            error). False for a saved run's config: it describes an experiment, wherever it was
            trained.
    """
    tree = copy.deepcopy(dict(tree or {}))  # overrides never leak into the caller's dict
    for key, value in parse_overrides(list(overrides)):
        set_key(tree, key, value)
    try:
        return Config.model_validate(tree, context={"machine": machine})
    except ValidationError as err:
        raise explain(err, source, Config) from None


def read_config_tree(path: str | Path) -> dict:
    """A YAML config file as a mapping, its relative data paths taken relative to its folder.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML, or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text; save the config as UTF-8"
        ) from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of sections, not {type(tree).__name__}"
        )
    return resolve_paths(tree or {}, path.parent)


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides, validate.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML, an unknown key (the message lists
            the allowed ones), a value of the wrong type or a failed cross-field check.
    """
    path = Path(path)
    return config_from_dict(read_config_tree(path), overrides, source=str(path))


def resolve_paths(tree: dict, base: Path) -> dict:
    """The config's data paths, where relative, taken relative to the config's folder (paths
    given with --set stay relative to the working directory)."""
    data = tree.get("data")
    if not isinstance(data, dict):
        return tree
    data = dict(data)

    def relative(value: Any) -> bool:
        return (
            isinstance(value, str)
            and not is_url(value)
            and not Path(value).expanduser().is_absolute()
        )

    if relative(data.get("path")):
        data["path"] = os.path.normpath(base / data["path"])
    for side in ("users", "items"):
        table = data.get(side)
        if isinstance(table, dict) and relative(table.get("path")):
            data[side] = {**table, "path": os.path.normpath(base / table["path"])}
    return {**tree, "data": data}
