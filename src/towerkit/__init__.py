"""towerkit: train, evaluate and serve matching models (the retrieval stage of a recommender).

The package's layers are its folders (see docs/development.md): ``data`` and
``datasets`` below ``task``, ``nn``, ``index``; ``models``; ``config``; ``training`` and
``evaluation``; ``runs``; ``reports``, ``retrieval``, ``tune``; ``serve``; the CLI on top.
Names are imported on first use, so ``import towerkit`` loads neither torch nor pandas.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

from towerkit.errors import DataError, TowerkitError

__version__ = "0.1.0"

__all__ = [
    "Config",
    "DataError",
    "Run",
    "TowerkitError",
    "__version__",
    "compare",
    "example_log",
    "load_config",
    "open_run",
    "resume",
    "train",
]


def _lazy(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562) that import each of ``names``
    (name -> the module under ``package`` that defines it, or a whole ``towerkit.`` module
    name) on first use, so importing a package's light module (``towerkit.training.state``)
    does not load its heavy ones."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        home = names[name] if names[name].startswith("towerkit.") else f"{package}.{names[name]}"
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value  # once: later lookups find it without this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__


#: Modules that moved into the layer folders, by their old name. They stay importable under
#: it for one release (the same module object), with a DeprecationWarning naming the new home.
MOVED = {
    "towerkit.objectives": "towerkit.task.objectives",
    "towerkit.negatives": "towerkit.task.negatives",
    "towerkit.contrastive": "towerkit.training.contrastive",
    "towerkit.state": "towerkit.training.state",
    "towerkit.outcomes": "towerkit.evaluation.outcomes",
    "towerkit.components": "towerkit.runs.components",
    "towerkit.pipeline": "towerkit.runs.pipeline",
    "towerkit.lifecycle": "towerkit.runs.lifecycle",
    "towerkit.preparation": "towerkit.runs.preparation",
    "towerkit.budget": "towerkit.runs.budget",
    "towerkit.tracking": "towerkit.runs.tracking",
    "towerkit.user_towers": "towerkit.retrieval.towers",
    "towerkit.export": "towerkit.retrieval.export",
    "towerkit.report": "towerkit.reports",
    "towerkit.compare": "towerkit.reports.compare",
    "towerkit.starter": "towerkit.config.starter",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of a :data:`MOVED` name with the module at its new home."""

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = MOVED[spec.name]
        # stacklevel 2: the import statement (the import system's own frames are skipped)
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old name goes in the "
            "next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        """The module was executed under its new name already; the import system has just
        given it the old name's spec, so its own is put back."""
        module.__spec__ = self._specs[module.__name__]


if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedFinder())


#: the public API (see :mod:`towerkit.api`), imported on first use
_API = {
    **dict.fromkeys(
        ["Run", "compare", "example_log", "load_config", "open_run", "resume", "train"],
        "towerkit.api",
    ),
    "Config": "towerkit.config",
}  # fmt: skip
__getattr__, __dir__ = _lazy(__name__, _API)


class _Face(types.ModuleType):
    """The package's module type: an API name is never replaced by the deprecated module of
    the same name. (Importing the old ``towerkit.compare`` binds that module as the package's
    attribute, which would hide the function ``towerkit.compare``; the old import path still
    finds the module through ``sys.modules``.)"""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
