"""Prometheus metrics of the service, next to BentoML's own on ``/metrics``.

``bentoml.metrics`` creates them lazily in BentoML's multiprocess registry, so every
worker's counters add up and the drift gauges (computed from the shared store, the
same in every worker) are reported once (``livemax``).
"""

from __future__ import annotations

from typing import Any

import bentoml

_invalid: Any = bentoml.metrics.Counter(
    name="nb2prod_invalid_input_total",
    documentation="Requests refused by the input guard, by reason",
    labelnames=["reason"],
)
_dropped: Any = bentoml.metrics.Counter(
    name="nb2prod_monitor_dropped_total",
    documentation="Prediction records the monitor could not write (full queue or store failure)",
)
_logged: Any = bentoml.metrics.Counter(
    name="nb2prod_monitor_logged_total",
    documentation="Prediction records written to the prediction store",
)
_feature_psi: Any = bentoml.metrics.Gauge(
    name="nb2prod_feature_psi",
    documentation="Population stability index of a feature over the drift window",
    labelnames=["feature"],
    multiprocess_mode="livemax",
)
_prediction_psi: Any = bentoml.metrics.Gauge(
    name="nb2prod_prediction_psi",
    documentation="Population stability index of the predictions against the training labels",
    multiprocess_mode="livemax",
)
_window: Any = bentoml.metrics.Gauge(
    name="nb2prod_drift_window_rows",
    documentation="Rows in the drift window",
    multiprocess_mode="livemax",
)


def invalid(reason: str) -> None:
    _invalid.labels(reason=reason).inc()


def dropped(n: int) -> None:
    _dropped.inc(n)


def logged(n: int) -> None:
    _logged.inc(n)


def drift(report: dict[str, Any]) -> None:
    _window.set(report.get("window_rows", 0))
    for name, value in (report.get("features") or {}).items():
        if value.get("psi") is not None:
            _feature_psi.labels(feature=name).set(value["psi"])
    pred = report.get("prediction") or {}
    if pred.get("psi") is not None:
        _prediction_psi.set(pred["psi"])
