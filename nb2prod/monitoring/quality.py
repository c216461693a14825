"""Live quality of a served model from labelled predictions (feedback joined on request id).

Classifiers get ``accuracy`` and ``f1_macro`` (as scikit-learn's ``accuracy_score`` and
``f1_score(average="macro")``), regressors ``mae`` and ``rmse``: the names of
:mod:`nb2prod.metrics`, so live figures compare with the ``test_<metric>`` of the run.
A label and a prediction are compared as keys: 1, 1.0 and "1" are the same class.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from nb2prod import metrics as m

__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "Quality",
    "QualityMetrics",
    "metric_names",
    "quality_metrics",
    "summarize",
]

CLASSIFICATION = "classification"
REGRESSION = "regression"


class QualityMetrics(TypedDict, total=False):
    """Metrics of a set of labelled predictions: ``labelled`` (how many), and per task
    ``accuracy``/``f1_macro`` or ``mae``/``rmse`` (None without a labelled row).

    The metric keys are :data:`nb2prod.metrics.CLASSIFICATION` and ``REGRESSION`` (a test
    checks it); they are spelled out because a TypedDict key must be a literal.
    """

    labelled: int
    accuracy: float | None
    f1_macro: float | None
    mae: float | None
    rmse: float | None


class Quality(QualityMetrics, total=False):
    """Live quality of a window: the ``task``, the metrics of every labelled row, and ``by_version``."""

    task: str
    by_version: dict[str, QualityMetrics]


def metric_names(classifier: bool) -> tuple[str, ...]:
    """The live metrics of a task, named as in :mod:`nb2prod.metrics`."""
    return m.CLASSIFICATION if classifier else m.REGRESSION


def _label_key(value: Any) -> str:
    """A label or prediction as a comparable key: 1, 1.0 and "1" differ from "a" but 1 == 1.0."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def quality_metrics(pairs: Sequence[tuple[Any, Any]], classifier: bool) -> QualityMetrics:
    """Metrics of (prediction, label) pairs (regression: pairs that are not both numbers are left out)."""
    if classifier:
        preds = [_label_key(p) for p, _ in pairs]
        labels = [_label_key(y) for _, y in pairs]
        n = len(labels)
        if n == 0:
            return {"labelled": 0, "accuracy": None, "f1_macro": None}
        correct = sum(p == y for p, y in zip(preds, labels, strict=True))
        tp: Counter[str] = Counter(y for p, y in zip(preds, labels, strict=True) if p == y)
        n_pred, n_true = Counter(preds), Counter(labels)
        classes = set(n_pred) | set(n_true)
        f1 = [2 * tp[c] / (n_pred[c] + n_true[c]) for c in classes]
        return {"labelled": n, "accuracy": correct / n, "f1_macro": float(np.mean(f1))}
    nums = [(_number(p), _number(y)) for p, y in pairs]
    usable = np.array([(p, y) for p, y in nums if p is not None and y is not None], dtype=float).reshape(
        -1, 2
    )
    if usable.shape[0] == 0:
        return {"labelled": 0, "mae": None, "rmse": None}
    err = usable[:, 0] - usable[:, 1]
    return {
        "labelled": int(usable.shape[0]),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
    }


def summarize(versioned: Sequence[tuple[str, Any, Any]], classifier: bool) -> Quality:
    """Live quality of (model version, prediction, label) triples: overall and per model version."""
    by_version: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for version, prediction, label in versioned:
        by_version[version].append((prediction, label))
    out: Quality = {"task": CLASSIFICATION if classifier else REGRESSION}
    out.update(quality_metrics([(p, y) for _, p, y in versioned], classifier))
    out["by_version"] = {v: quality_metrics(ps, classifier) for v, ps in sorted(by_version.items())}
    return out
