"""Fixtures of the serving tests: a fresh prediction store on each backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty prediction store of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "predictions.db")
    make: Callable[[str], str] = request.getfixturevalue("pg_fresh")
    return make(request.node.name)
