"""Layers only point down: the checks README.md promises anyone can run.

The layers are packages (:data:`LAYERS`): every module of ``src/towerkit`` is in one package
listed there, or is one of the few neutral modules of the root (:data:`ROOT`). An import at
any depth (module level, inside a function, under ``TYPE_CHECKING``) may point to its own
layer or below, never above, and the import graph has no cycle at all. A new package must be
given a layer here; a new root module is refused.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent.parent / "src" / "towerkit"

#: the root's modules: the package face, the two faces (the CLI, the Python API), and the
#: neutral ground every layer may import
ROOT = {
    "towerkit", "towerkit.__main__", "towerkit.cli", "towerkit.api", "towerkit.errors",
    "towerkit.files", "towerkit.storage",
    "towerkit.types", "towerkit.sections", "towerkit.similarity", "towerkit.distributed",
}  # fmt: skip

#: packages, lowest layer first
LAYERS: list[tuple[str, ...]] = [
    # neutral ground (the root's modules but the two faces)
    ("towerkit", "towerkit.errors", "towerkit.files", "towerkit.storage", "towerkit.types",
     "towerkit.sections", "towerkit.similarity", "towerkit.distributed"),
    # building blocks: the data layer, known data sets, layers, indexes, the retrieval task
    ("towerkit.data", "towerkit.datasets", "towerkit.nn", "towerkit.index", "towerkit.task"),
    # models: each owns its config section
    ("towerkit.models",),
    # the config: assembled from the sections of the layers below
    ("towerkit.config",),
    # the loop and the evaluator
    ("towerkit.training", "towerkit.evaluation"),
    # a run: its directory, data, components, budget, tracking, pipeline and lifecycle
    ("towerkit.runs",),
    # what runs learned, as pages (the export carries the report's data)
    ("towerkit.reports",),
    # applications of a run: retrieval and export, tuning
    ("towerkit.retrieval", "towerkit.tune"),
    ("towerkit.serve",),
    # the faces: the command line, and the same from Python
    ("towerkit.cli", "towerkit.__main__", "towerkit.api"),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if module in names:
            return index
    for index, names in enumerate(LAYERS):
        for name in names:
            if name != "towerkit" and name not in ROOT and module.startswith(name + "."):
                return index
    raise AssertionError(f"{module} has no layer: add its package to LAYERS in {__file__}")


def test_the_root_holds_only_the_face_the_cli_and_neutral_modules():
    root = {m for m in MODULES if m.count(".") == 1 and not (SOURCE / m.split(".")[1]).is_dir()}
    extra = sorted(root - ROOT)
    assert not extra, f"{extra} at the root: put each in the package of its layer"


def test_every_package_has_a_layer():
    packages = {m for m in MODULES if m.count(".") == 1 and (SOURCE / m.split(".")[1]).is_dir()}
    for package in packages:
        layer_of(package)


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
    monkeypatch.setitem(GRAPH, "towerkit.similarity", {"towerkit.task.objectives"})
    monkeypatch.setitem(GRAPH, "towerkit.task.objectives", {"towerkit.similarity"})
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_the_import_graph_has_no_cycle()


def test_serving_loads_no_training_module():
    """``python -X importtime -c "import towerkit.serve.app"``: what serving loads."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import towerkit.serve.app, towerkit.retrieval.export",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "towerkit.serve.app" in loaded and "towerkit.retrieval.towers" in loaded
    forbidden = {"towerkit.training.trainer", "towerkit.task.retrieval", "towerkit.task.negatives",
                 "towerkit.runs.pipeline", "towerkit.evaluation.evaluator",
                 "towerkit.data.batches", "pandas"}  # fmt: skip
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


#: what importing each module must not load (each module in a fresh interpreter, once)
MUST_NOT_LOAD = {
    "towerkit": ["torch", "pandas"],
    "towerkit.index.exact": ["towerkit.evaluation"],
    "towerkit.index": ["towerkit.evaluation"],
    "towerkit.models": ["towerkit.data"],
    "towerkit.runs": ["towerkit.runs.pipeline"],
    "towerkit.runs.rundir": ["towerkit.runs.pipeline", "towerkit.training.trainer", "pandas"],
    "towerkit.retrieval": ["towerkit.runs.pipeline"],
    "towerkit.retrieval.retriever": [
        "towerkit.runs.pipeline", "towerkit.training.trainer", "pandas",
    ],
    "towerkit.retrieval.export": ["towerkit.task.retrieval"],
    "towerkit.task": ["towerkit.training"],
    "towerkit.task.retrieval": ["towerkit.training"],
    "towerkit.training.state": ["towerkit.training.trainer"],
    "towerkit.evaluation.outcomes": ["torch", "towerkit.evaluation.evaluator"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(MUST_NOT_LOAD))
def test_importing_a_module_loads_nothing_above_it(module):
    must_not_load = MUST_NOT_LOAD[module]
    code = f"import sys, {module}; print([m for m in {must_not_load!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing {module} loads {done.stdout.strip()}"


@pytest.mark.parametrize("old", sorted(__import__("towerkit").MOVED))
def test_a_moved_module_still_imports_from_its_old_name_with_a_warning(old, monkeypatch):
    import importlib

    from towerkit import MOVED

    new = importlib.import_module(MOVED[old])
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new and module.__spec__.name == new.__name__


@pytest.mark.parametrize(
    "package", ["data", "task", "training", "evaluation", "runs", "retrieval", "reports", "tune"]
)
def test_every_name_a_package_offers_resolves(package):
    import importlib

    module = importlib.import_module(f"towerkit.{package}")
    names = [n for n in dir(module) if not n.startswith("_")]
    assert set(module.__all__) <= set(names)
    for name in names:
        getattr(module, name)
