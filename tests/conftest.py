"""Shared fixtures: small handmade logs and an isolated towerkit home."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty towerkit home, so tests never touch the user's cache."""
    path = tmp_path / "home"
    monkeypatch.setenv("TOWERKIT_HOME", str(path))
    return path


@pytest.fixture
def tiny_log() -> pd.DataFrame:
    """Three users; user 'b' has two interactions at the same second (file order breaks it)."""
    return pd.DataFrame(
        {
            "user": ["a", "b", "a", "b", "c", "a", "b", "c", "a"],
            "item": [10, 20, 30, 10, 20, 20, 30, 40, 40],
            "timestamp": [5, 1, 6, 1, 2, 7, 3, 9, 8],
        }
    )
