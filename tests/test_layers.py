"""Layers only point down: the checks README.md promises anyone can run.

Every module of ``src/towerkit`` belongs to one layer (:data:`LAYERS`); an import at any depth
(module level, inside a function, under ``TYPE_CHECKING``) may point to its own layer or below,
never above, and the import graph has no cycle at all. A new module must be given a layer here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent.parent / "src" / "towerkit"

#: lowest first; a module is in the layer of the longest prefix listed
LAYERS: list[tuple[str, ...]] = [
    # contracts and primitives: no towerkit import above them
    ("towerkit", "towerkit.errors", "towerkit.files", "towerkit.types", "towerkit.sections",
     "towerkit.outcomes", "towerkit.state", "towerkit.distributed", "towerkit.similarity",
     "towerkit.objectives", "towerkit.data.history", "towerkit.data.vocab"),
    # building blocks: the data layer, known data sets, layers, indexes, negatives, the task
    ("towerkit.data", "towerkit.datasets", "towerkit.nn", "towerkit.index", "towerkit.negatives",
     "towerkit.task"),
    # models: each owns its config section
    ("towerkit.models",),
    # the config: assembled from the sections of the layers below
    ("towerkit.config",),
    # what uses a config: run directories, the loop, the evaluator, the user towers, preparing
    # data and building components from a config
    ("towerkit.runs", "towerkit.tracking", "towerkit.training", "towerkit.contrastive",
     "towerkit.evaluation", "towerkit.user_towers", "towerkit.starter", "towerkit.preparation",
     "towerkit.components", "towerkit.budget"),
    # applications of a run: retrieval, export, the training pipeline
    ("towerkit.retrieval", "towerkit.export", "towerkit.pipeline", "towerkit.lifecycle",
     "towerkit.report", "towerkit.compare", "towerkit.tune"),
    ("towerkit.serve",),
    ("towerkit.cli", "towerkit.__main__"),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, layer = -1, None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, layer = len(name), index
    assert layer is not None, f"{module} has no layer: add it to LAYERS in {__file__}"
    return layer


def towerkit_imports(path: Path) -> set[str]:
    """The towerkit modules a source file imports, at any depth; ``from pkg import name`` is
    the module ``pkg.name`` when that is a module, else ``pkg``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "towerkit")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "towerkit":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


GRAPH = {module: towerkit_imports(path) - {module} for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module):
    upward = sorted(t for t in GRAPH[module] if layer_of(t) > layer_of(module))
    assert not upward, f"{module} (layer {layer_of(module)}) imports {upward} from above"


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_guard_sees_an_upward_import_and_a_cycle(monkeypatch):
    """The two tests above fail when they should (on a doctored graph)."""
    monkeypatch.setitem(GRAPH, "towerkit.types", {"towerkit.data.split"})
    with pytest.raises(AssertionError, match=r"imports \['towerkit\.data\.split'\] from above"):
        test_no_module_imports_a_layer_above_its_own("towerkit.types")
    monkeypatch.setitem(GRAPH, "towerkit.similarity", {"towerkit.objectives"})
    monkeypatch.setitem(GRAPH, "towerkit.objectives", {"towerkit.similarity"})
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_the_import_graph_has_no_cycle()


def test_serving_loads_no_training_module():
    """``python -X importtime -c "import towerkit.serve.app"``: what serving loads."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import towerkit.serve.app, towerkit.export"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "towerkit.serve.app" in loaded and "towerkit.retrieval" in loaded
    forbidden = {"towerkit.training", "towerkit.task", "towerkit.negatives", "towerkit.pipeline",
                 "towerkit.evaluation", "towerkit.data.batches", "pandas"}  # fmt: skip
    assert not forbidden & loaded, f"serving loads {sorted(forbidden & loaded)}"


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
        ("towerkit.retrieval", "towerkit.training"),
        ("towerkit.retrieval", "pandas"),
        ("towerkit.export", "towerkit.task"),
        ("towerkit.runs", "towerkit.training"),
        ("towerkit.task", "towerkit.training"),
    ],
)
def test_importing_a_module_loads_nothing_above_it(module, must_not_load):
    code = f"import sys, {module}; print({must_not_load!r} in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"importing {module} loads {must_not_load}"
