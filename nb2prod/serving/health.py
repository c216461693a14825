"""Metrics of the prediction log's health on ``/metrics``, next to ``metrics.py``'s.

``nb2prod_monitor_degraded`` is 1 while a worker cannot write the prediction store (its
rows go to the local spool and are replayed when the store is back); ``/readyz`` stays
ready meanwhile: predictions are still answered and nothing is lost.
"""

from __future__ import annotations

from typing import Any

import bentoml

_degraded: Any = bentoml.metrics.Gauge(
    name="nb2prod_monitor_degraded",
    documentation="1 while the prediction store cannot be written (rows are spooled to local disk)",
    multiprocess_mode="livemax",
)
_spooled: Any = bentoml.metrics.Counter(
    name="nb2prod_monitor_spooled_total",
    documentation="Prediction records held in the local spool because the store could not take them",
)
_replayed: Any = bentoml.metrics.Counter(
    name="nb2prod_monitor_replayed_total",
    documentation="Prediction records replayed from the local spool into the store",
)


def degraded(on: bool) -> None:
    _degraded.set(1 if on else 0)


def spooled(n: int) -> None:
    _spooled.inc(n)


def replayed(n: int) -> None:
    _replayed.inc(n)
