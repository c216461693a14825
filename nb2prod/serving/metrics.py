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


_predictions: Any = bentoml.metrics.Counter(
    name="nb2prod_predictions_total",
    documentation="Rows answered, by the model version that answered them",
    labelnames=["model_version"],
)
_fallbacks: Any = bentoml.metrics.Counter(
    name="nb2prod_fallback_total",
    documentation="Rows a model version raised on, answered by the fallback version instead",
    labelnames=["model_version"],
)
_active: Any = bentoml.metrics.Gauge(
    name="nb2prod_active_model",
    documentation="1 for the model version that answers (0 for the others carried)",
    labelnames=["model_version"],
    multiprocess_mode="livemax",
)
_canary: Any = bentoml.metrics.Gauge(
    name="nb2prod_canary_percent",
    documentation="Share of the rows routed to the canary version",
    labelnames=["model_version"],
    multiprocess_mode="livemax",
)
_known_versions: set[str] = set()


def predicted(versions: list[str]) -> None:
    counts: dict[str, int] = {}
    for v in versions:
        counts[v] = counts.get(v, 0) + 1
    for v, n in counts.items():
        _predictions.labels(model_version=v).inc(n)


def fallback(version: str, n: int) -> None:
    _fallbacks.labels(model_version=version).inc(n)


def state(active: str, canary: dict[str, Any] | None) -> None:
    _known_versions.add(active)
    if canary:
        _known_versions.add(str(canary["version"]))
    for v in _known_versions:
        _active.labels(model_version=v).set(1 if v == active else 0)
        _canary.labels(model_version=v).set(
            float(canary["percent"]) if canary and canary["version"] == v else 0
        )
