"""Fixtures of the re-execution tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.execute.runs import NOTEBOOKS


@pytest.fixture
def nbs(project: Path) -> Path:
    """The test notebooks, copied into the project (runs record their paths)."""
    folder = project / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    return folder
