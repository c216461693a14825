"""Drift and performance of a served model, from its prediction store.

- :mod:`.window`: the store queries (sketches, labelled predictions, events of a time
  window) and :func:`parse_since`;
- :mod:`.stats`: the statistics (PSI, KS, chi-squared, the drift decision);
- :mod:`.quality`: live quality from feedback (``accuracy``, ``f1_macro``, ``mae``, ``rmse``);
- :mod:`.report`: :func:`build_report`, returning a :class:`MonitorReport`.

The core returns data; ``nb2prod.render.report`` renders a report as text or HTML.
numpy and scipy only: no mlflow, bentoml or papermill.
"""

from __future__ import annotations

from nb2prod.monitoring.quality import Quality, QualityMetrics
from nb2prod.monitoring.report import (
    MIN_ROWS,
    Distribution,
    MonitorReport,
    OverTime,
    Reference,
    VersionStats,
    build_report,
    reference_of,
)
from nb2prod.monitoring.stats import ColumnDrift, column_drift, psi
from nb2prod.monitoring.window import Events, InvalidInputs, Window, parse_since, read_window

__all__ = [
    "MIN_ROWS",
    "ColumnDrift",
    "Distribution",
    "Events",
    "InvalidInputs",
    "MonitorReport",
    "OverTime",
    "Quality",
    "QualityMetrics",
    "Reference",
    "VersionStats",
    "Window",
    "build_report",
    "column_drift",
    "parse_since",
    "psi",
    "read_window",
    "reference_of",
]
