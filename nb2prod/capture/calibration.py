"""The calibration map of a classifier, fitted at capture on its tracked test set.

``nb2prod monitor`` estimates a classifier's accuracy, F1 and ROC AUC on unlabelled
traffic from the probabilities the service logged (confidence-based performance
estimation, :mod:`nb2prod.monitoring.estimate`). Raw ``predict_proba`` scores are often
over- or under-confident, so the estimate first maps each class's score through the
calibration fitted here: per class, one-vs-rest isotonic regression (pool adjacent
violators) of "the label is this class" on the score, on the test rows the capture saw.

The map is small JSON (at most :data:`MAX_POINTS` knots a class) and travels in the model
record and from there in the Bento's manifest (``ModelInfo.calibration``)::

    {"method": "isotonic-ovr", "rows": 171, "classes": ["0", "1"], "accuracy": 0.97,
     "maps": {"0": {"x": [...], "y": [...]}, "1": {"x": [...], "y": [...]}}}

``accuracy`` is the model's accuracy on those test rows: the reference an estimate is
compared with (``nb2prod retrain --if-degraded`` triggers on the drop from it).

A class score ``p`` maps to ``numpy.interp(p, x, y)``; the calibrated scores of a row are
then normalised to sum to one. Pure numpy: nothing here touches MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["METHOD", "MIN_ROWS", "fit_calibration", "of_test_set"]

METHOD = "isotonic-ovr"
MIN_ROWS = 20
"""Fewest labelled test rows to fit a map from (fewer: no calibration, the estimate uses raw scores)."""
MAX_POINTS = 64


def _pav(weights: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool adjacent violators over points in score order (``weights`` rows, ``sums`` hits each).

    Returns:
        Per block: the index one past its last point, and its rate of hits.
    """
    ends: list[int] = []
    w: list[float] = []
    t: list[float] = []
    for i, (wi, si) in enumerate(zip(weights.tolist(), sums.tolist(), strict=True)):
        ends.append(i + 1)
        w.append(wi)
        t.append(si)
        while len(w) > 1 and t[-2] / w[-2] >= t[-1] / w[-1]:
            end, wl, tl = ends.pop(), w.pop(), t.pop()
            ends[-1] = end
            w[-1] += wl
            t[-1] += tl
    return np.asarray(ends), np.asarray(t) / np.asarray(w)


def _isotonic(scores: np.ndarray, hits: np.ndarray) -> dict[str, list[float]]:
    """Knots ``x`` (score) -> ``y`` (rate of hits) of the isotonic fit of ``hits`` on ``scores``."""
    # tied scores are one point (their rows pooled): a map is a function of the score
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=hits.astype(float), minlength=len(values))
    ends, means = _pav(counts.astype(float), sums)
    starts = np.r_[0, ends[:-1]]
    # flat within a block (its lowest to its highest score), linear between blocks: sklearn's
    # IsotonicRegression; np.interp holds the end values beyond the first and last knot
    xs_list: list[float] = []
    ys_list: list[float] = []
    for a, b, mean in zip(starts.tolist(), ends.tolist(), means.tolist(), strict=True):
        for x in (values[a], values[b - 1]) if b - 1 > a else (values[a],):
            xs_list.append(float(x))
            ys_list.append(float(mean))
    xs, ys = np.asarray(xs_list), np.asarray(ys_list)
    if len(xs) > MAX_POINTS:  # keep it small: every few knots (the ends kept)
        keep = np.unique(np.linspace(0, len(xs) - 1, MAX_POINTS).round().astype(int))
        xs, ys = xs[keep], ys[keep]
    return {"x": [round(float(v), 6) for v in xs], "y": [round(float(v), 6) for v in ys]}


def fit_calibration(proba: Any, labels: Sequence[Any], classes: Sequence[Any]) -> dict[str, Any] | None:
    """The calibration map of class scores ``proba`` (rows x classes) against true ``labels``.

    Args:
        proba: ``predict_proba`` of the test rows, one column per class, in ``classes`` order.
        labels: The true labels of those rows.
        classes: The model's classes (``estimator.classes_``).

    Returns:
        The JSON-able map (see the module doc), or None with fewer than :data:`MIN_ROWS` rows
        or scores that do not match the classes.
    """
    p = np.asarray(proba, dtype=float)
    keys = [str(c) for c in classes]
    if p.ndim != 2 or p.shape[1] != len(keys) or p.shape[0] < MIN_ROWS or len(labels) != p.shape[0]:
        return None
    if not np.isfinite(p).all():
        return None
    truth = np.array([str(v) for v in labels], dtype=object)
    maps = {key: _isotonic(p[:, j], truth == key) for j, key in enumerate(keys)}
    accuracy = float(np.mean(np.asarray(keys, dtype=object)[p.argmax(axis=1)] == truth))
    return {"method": METHOD, "rows": int(p.shape[0]), "classes": keys, "accuracy": accuracy, "maps": maps}


def _label_text(value: Any) -> str:
    """A label as the service writes a class name: ``str`` of the class (1.0 of an int label is ``1``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def of_test_set(
    estimator: Any, test: tuple[Any, Any] | Callable[[], tuple[Any, Any] | None] | None
) -> dict[str, Any] | None:
    """The calibration of a fitted classifier on a labelled test set (``(X, y)``, or a function giving it), never raising.

    Capture never breaks the notebook: a regressor, a model without ``predict_proba``, no
    test set, or a test frame that does not fit the model give None.
    """
    try:
        if callable(test):
            test = test()
        if test is None or not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
            return None
        X, y = test
        classes = list(estimator.classes_)
        proba = estimator.predict_proba(X)
        labels = [_label_text(v) for v in np.asarray(y).tolist()]
        return fit_calibration(proba, labels, [_label_text(c) for c in classes])
    except Exception:
        return None
