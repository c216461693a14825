"""Drift and performance of a served model, from its prediction store.

``stats`` holds the statistics (PSI, KS, chi-squared, the drift decision), ``report``
reads a prediction store into a :class:`~nb2prod.monitoring.report.MonitorReport`
(and renders it as a terminal table), ``html`` renders it as one self-contained
HTML page. numpy and scipy only: no mlflow, bentoml or papermill.
"""

from __future__ import annotations
