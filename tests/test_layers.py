"""Layers only point down: the checks README.md promises anyone can run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent.parent / "src" / "towerkit"


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((SOURCE / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_nothing_from_the_data_layer(path):
    data = [
        m for m in imported_modules(path) if m == "towerkit.data" or m.startswith("towerkit.data.")
    ]
    assert not data, f"{path.name} imports {data}"


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        ("towerkit.index.exact", "towerkit.evaluation"),
        ("towerkit.index", "towerkit.evaluation"),
        ("towerkit.models", "towerkit.data"),
        ("towerkit.runs", "towerkit.pipeline"),
        ("towerkit.retrieval", "towerkit.pipeline"),
        ("towerkit.task", "towerkit.training"),
    ],
)
def test_importing_a_module_loads_nothing_above_it(module, must_not_load):
    code = f"import sys, {module}; print({must_not_load!r} in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"importing {module} loads {must_not_load}"
