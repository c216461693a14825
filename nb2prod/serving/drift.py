"""Live drift: PSI per feature on the reference bins shipped in the Bento, over a sliding window.

Numeric columns use the training decile bins (``drift_edges``/``drift_fractions`` of the
captured profile); categorical, string and bool columns the top-50 frequencies plus
``__other__``. Prediction drift compares the predictions with the training labels'
profile. Counts are smoothed by half an observation per bin, so an empty bin in a
small window does not dominate the index.

This is the one PSI of nb2prod: the monitor's report (``nb2prod.monitoring.stats``) uses
:func:`psi` and :func:`psi_rows` from here, so the live ``/drift`` and ``nb2prod monitor``
give the same index for the same counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .manifest import Target

OTHER = "__other__"
MIN_ROWS = 50


def _edges(values: Sequence[Any]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=float)


def _expected(fractions: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reference fractions clipped at 1e-4 and renormalised (a bin never seen is not zero)."""
    exp = np.clip(np.asarray(fractions, dtype=float), 1e-4, None)
    return exp / exp.sum()


def _observed(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts plus half an observation per bin, as fractions (per row of a matrix)."""
    obs = np.asarray(counts, dtype=float) + 0.5
    return obs / obs.sum(axis=-1, keepdims=True)


def psi(expected: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray) -> float:
    """PSI of observed ``counts`` against ``expected`` fractions (both per bin)."""
    exp, obs = _expected(expected), _observed(counts)
    return float(np.sum((obs - exp) * np.log(obs / exp)))


def psi_rows(expected: Sequence[float] | np.ndarray, counts: np.ndarray) -> list[float | None]:
    """:func:`psi` of each row of a counts matrix (None for a row without a count)."""
    rows = np.asarray(counts, dtype=float)
    exp, obs = _expected(expected), _observed(rows)
    values = np.sum((obs - exp) * np.log(obs / exp), axis=1)
    return [float(v) if n > 0 else None for v, n in zip(values, rows.sum(axis=1), strict=True)]


def column_psi(profile: Mapping[str, Any], values: Sequence[Any]) -> float | None:
    """PSI of one column's window values against its reference profile (None: not comparable)."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None
    edges = profile.get("drift_edges")
    fractions = profile.get("drift_fractions")
    if edges and fractions:
        try:
            xs = np.array([float(v) for v in present], dtype=float)
        except (TypeError, ValueError):
            return None
        inner = _edges(edges)[1:-1]
        index = np.searchsorted(inner, xs, side="right")
        counts = np.bincount(index, minlength=len(fractions))[: len(fractions)]
        return psi(fractions, counts)
    freqs = profile.get("frequencies")
    if freqs:
        keys = [k for k in freqs if k != OTHER]
        slot = {k: i for i, k in enumerate(keys)}
        tallies = np.zeros(len(keys) + 1)
        for v in present:
            tallies[slot.get(str(v), len(keys))] += 1
        expected = [freqs[k] for k in keys] + [freqs.get(OTHER, 0.0)]
        return psi(expected, tallies)
    return None


def report(
    rows: Sequence[tuple[str, str]],
    reference: Mapping[str, Any],
    target: Target | None,
    *,
    threshold: float,
    window: int,
) -> dict[str, Any]:
    """The drift report of a window of (features JSON, prediction JSON) rows, newest first."""
    features: dict[str, list[Any]] = {name: [] for name in reference}
    predictions: list[Any] = []
    for feature_json, prediction_json in rows:
        values = json.loads(feature_json)
        for name in features:
            features[name].append(values.get(name))
        pred = json.loads(prediction_json)
        predictions.append(pred.get("prediction"))
    n = len(rows)
    out: dict[str, Any] = {
        "window": window,
        "window_rows": n,
        "min_rows": MIN_ROWS,
        "threshold": threshold,
        "method": "psi",
        "features": {},
        "prediction": None,
        "drifted": [],
    }
    if n < MIN_ROWS:
        out["status"] = "insufficient_data"
        return out
    for name, profile in reference.items():
        value = column_psi(profile, features[name])
        out["features"][name] = {"psi": None if value is None else round(value, 6)}
        if value is not None and value > threshold:
            out["drifted"].append(name)
    if target is not None and target.profile:
        value = column_psi(target.profile, predictions)
        out["prediction"] = {"psi": None if value is None else round(value, 6), "against": target.name}
        if value is not None and value > threshold:
            out["drifted"].append("__prediction__")
    out["status"] = "drift" if out["drifted"] else "ok"
    return out


def window_rows(store: str, window: int) -> list[tuple[str, str]]:
    """The newest ``window`` logged rows of the prediction store (a path or a SQLAlchemy URL)."""
    from .monitor import recent

    return recent(store, window)
