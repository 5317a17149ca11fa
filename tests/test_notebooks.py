"""The notebooks in docs/notebooks run top to bottom in a real Jupyter kernel (nbclient), as a
reader runs them, and are kept in the repository with their outputs stripped. ML-100K is the
offline stand-in cache here; the documentation site's build runs them on the real data set.

Each notebook is a class of its own, so that ``--dist loadscope`` spreads them over workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"


def execute(name: str, folder: Path) -> nbformat.NotebookNode:
    """Run the notebook in ``folder`` (its working directory) and return it with outputs;
    a failing cell fails the test with the cell and its error."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    try:
        client.execute()
    except CellExecutionError as err:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the traceback's colours
        pytest.fail(f"{name}: {plain[-4000:]}", pytrace=False)
    return book


def text_of(book: nbformat.NotebookNode) -> str:
    """Every code cell's outputs as text (streams, results, errors)."""
    parts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
            parts.append(output.get("evalue", ""))
    return "\n".join(parts)


def test_the_notebooks_are_kept_without_outputs():
    books = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [b.name for b in books] == ["own-log.ipynb", "quickstart.ipynb", "serve.ipynb"]
    for path in books:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name
        assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "python3"


class TestQuickstart:
    def test_trains_recommends_and_reads_the_outcomes(self, offline_ml100k, tmp_path):
        book = execute("quickstart.ipynb", tmp_path)
        shown = text_of(book)
        assert "Run(" in shown and "youtube_dnn" in shown
        assert "most popular" in shown and "ndcg@10" in shown  # the metrics table
        assert "report.html" in shown


class TestOwnLog:
    def test_a_csv_to_a_tuned_run_and_a_comparison(self, home, tmp_path):
        book = execute("own-log.ipynb", tmp_path)
        shown = text_of(book)
        assert "customer" in shown and "sasrec" in shown
        assert "valid ndcg@10" in shown  # the best trial
        assert "Difference(metric='hr@10'" in shown  # the tuned run against popularity


class TestServe:
    def test_exports_serves_and_filters_in_milvus_lite(self, offline_ml100k, tmp_path):
        book = execute("serve.ipynb", tmp_path)
        shown = text_of(book)
        assert "'milvus'" in shown and "films_" in shown  # the collection the alias names
        assert "'ready': True" in shown
        assert 'towerkit_requests_total{endpoint="/recommend",status="200"} 3.0' in shown
