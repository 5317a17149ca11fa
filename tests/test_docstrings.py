"""Documentation that runs and covers: every ``>>>`` example in the package's docstrings and in
the site's pages is run here as a doctest (each docstring in an empty folder of its own), and
every public module, function, class, method and CLI command has a docstring."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import click
import pytest
import typer

import towerkit
from towerkit import cli

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "towerkit"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: every module of the package, by name (``__main__`` runs the CLI when imported)
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(towerkit.__path__, "towerkit.")
    if not info.name.endswith("__main__")
)


def _source(name: str) -> Path:
    path = SOURCE.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _report(runner_output: list[str]) -> str:
    return "".join(runner_output) or "no output"


def _run(tests: list[doctest.DocTest], folder: Path, monkeypatch) -> tuple[int, str]:
    """Run each doctest in a fresh subfolder of ``folder``; the number of examples run and
    what failed."""
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: list[str] = []
    for index, test in enumerate(tests):
        where = folder / f"t{index}"
        where.mkdir()
        monkeypatch.chdir(where)
        runner.run(test, out=out.append, clear_globs=True)
    summary = runner.summarize(verbose=False)
    assert summary.failed == 0, _report(out)
    return summary.attempted, _report(out)


WITH_EXAMPLES = [name for name in MODULES if ">>>" in _source(name).read_text()]


def test_the_modules_with_examples_are_found():
    assert {"towerkit.api", "towerkit.similarity", "towerkit.data.synth"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    module = importlib.import_module(name)
    found = doctest.DocTestFinder(exclude_empty=True).find(
        module, extraglobs={"towerkit": towerkit}
    )
    tests = [test for test in found if test.examples]
    assert tests, f"{name}: '>>>' in the source but no example found"
    attempted, _ = _run(tests, tmp_path, monkeypatch)
    assert attempted >= len(tests)


FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(
    path.relative_to(ROOT).as_posix()
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    if any(">>>" in block for block in FENCE.findall(path.read_text()))
)


def page_doctest(path: Path) -> doctest.DocTest:
    """The ``>>>`` examples of a Markdown page's Python blocks as one doctest: a page's
    examples build on each other, top to bottom, as a reader runs them."""
    text = path.read_text()
    parser = doctest.DocTestParser()
    examples: list[doctest.Example] = []
    for match in FENCE.finditer(text):
        first_line = text.count("\n", 0, match.start(1))
        for example in parser.get_examples(match.group(1)):
            example.lineno += first_line
            examples.append(example)
    return doctest.DocTest(examples, {"towerkit": towerkit}, path.name, str(path), 0, text)


def test_the_pages_with_examples_are_found():
    assert "docs/training.md" in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, tmp_path, monkeypatch):
    test = page_doctest(ROOT / page)
    attempted, _ = _run([test], tmp_path, monkeypatch)
    assert attempted == len(test.examples) > 0


def test_a_wrong_example_fails(tmp_path, monkeypatch):
    """The runner above really compares: a page that claims the seed's 0.016 fails."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python\n>>> import torch\n>>> from towerkit.task.objectives import listwise\n"
        ">>> round(listwise(torch.tensor([5.0]), torch.tensor([[-5.0] * 3])).item(), 3)\n"
        "0.016\n```\n"
    )
    with pytest.raises(AssertionError, match=r"Expected:\s+0\.016\s+Got:\s+0\.0"):
        _run([page_doctest(page)], tmp_path, monkeypatch)


def _public(module) -> list[tuple[str, object]]:
    """The functions and classes a module defines and offers: its ``__all__``, or its names
    without a leading underscore."""
    names = getattr(module, "__all__", None)
    found = []
    for attr, obj in vars(module).items():
        if attr.startswith("_") or (names is not None and attr not in names):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
            found.append((attr, obj))
    return found


def _members(cls) -> list[tuple[str, object]]:
    """A class's own public methods and properties (inherited docstrings count: a method that
    implements a documented base method is documented)."""
    found = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if inspect.isfunction(value) or isinstance(value, property | classmethod | staticmethod):
            found.append((attr, getattr(cls, attr)))
    return found


def test_every_public_name_has_a_docstring():
    missing = []
    for name in MODULES:
        module = importlib.import_module(name)
        if not (module.__doc__ or "").strip():
            missing.append(f"module {name}")
        for attr, obj in _public(module):
            if not (obj.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                missing += [
                    f"{name}.{attr}.{member}"
                    for member, value in _members(obj)
                    if not (inspect.getdoc(value) or "").strip()
                ]
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def _commands(command: click.Command, path: str = "towerkit"):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_every_cli_command_and_option_has_help():
    missing = []
    for path, command in _commands(typer.main.get_command(cli.app)):
        if not (command.help or "").strip():
            missing.append(path)
        missing += [
            f"{path} {param.opts[0]}"
            for param in command.params
            if isinstance(param, click.Option)
            and not param.hidden
            and param.name != "help"
            and not (param.help or "").strip()
        ]
    assert not missing, "without help:\n" + "\n".join(missing)


def test_every_face_name_has_an_example():
    """``towerkit.X`` for each public X: a docstring with a ``>>>`` example (classes count
    their own docstring; error classes are described, not demonstrated)."""
    without = [
        name
        for name in towerkit.__all__
        if name != "__version__"
        and not issubclass_of_error(getattr(towerkit, name))
        and ">>>" not in (getattr(towerkit, name).__doc__ or "")
    ]
    assert not without, f"no example in the docstring of: {without}"


def issubclass_of_error(obj: object) -> bool:
    return inspect.isclass(obj) and issubclass(obj, Exception)
