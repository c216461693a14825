"""Shared fixtures of the monitoring tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.monitoring.stores import breast_cancer


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    """Breast-cancer rows, a classifier's manifest and the fitted model (see ``stores.breast_cancer``)."""
    return breast_cancer()
