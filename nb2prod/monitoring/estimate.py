"""Label-free quality of a classifier: confidence-based performance estimation (CBPE).

Ground truth arrives late; the class probabilities the service logged are there now. When
the model's calibrated probabilities are right (they were fitted on the tracked test set
at capture: :mod:`nb2prod.capture.calibration`) and the world shifted only in its inputs
(covariate shift: P(y | x) unchanged), the expected value of a metric on unlabelled rows
follows from them:

* ``estimated_accuracy``: the mean calibrated probability of the predicted class;
* ``estimated_f1_macro``: per class, expected true positives ``sum q_c`` over rows
  predicted ``c``, false positives ``sum (1 - q_c)`` over them, false negatives ``sum
  q_c`` over the others; F1 from those, averaged over classes;
* ``estimated_roc_auc`` (one-vs-rest, macro over classes): the ROC curve drawn with each
  row counting ``q_c`` as a positive and ``1 - q_c`` as a negative, ranked by the raw score.

Computed at report time from the logged rows; nothing runs on the request path. A row's
logged prediction is ``{"prediction": ..., "probabilities": {"<class>": p, ...}}``; rows
without probabilities are not estimated (counted in ``rows`` but not in ``estimated``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

__all__ = [
    "ESTIMATED_METRICS",
    "Block",
    "Calibration",
    "Estimate",
    "Group",
    "estimate",
    "estimate_groups",
    "realized",
    "row_hits",
]

ESTIMATED_METRICS = ("accuracy", "f1_macro", "roc_auc")
"""The metrics estimated; the estimate of ``m`` is named ``estimated_<m>``."""


class Estimate(TypedDict, total=False):
    """Estimated (and, where labels exist, realized) quality of a set of rows.

    ``estimated`` rows carried probabilities; ``labelled`` of them have feedback, and
    ``accuracy``/``f1_macro``/``roc_auc`` are realized on those (None without).
    """

    estimated: int
    calibrated: bool
    estimated_accuracy: float | None
    estimated_f1_macro: float | None
    estimated_roc_auc: float | None
    labelled: int
    accuracy: float | None
    f1_macro: float | None
    roc_auc: float | None


class Calibration:
    """A calibration map (the JSON of ``capture/calibration.py``) applied to class scores."""

    def __init__(self, data: Mapping[str, Any] | None, classes: Sequence[str]) -> None:
        self.classes = [str(c) for c in classes]
        maps = (data or {}).get("maps") or {}
        self.knots: list[tuple[np.ndarray, np.ndarray] | None] = []
        for c in self.classes:
            m = maps.get(c)
            if m and m.get("x") and len(m["x"]) == len(m.get("y") or ()):
                self.knots.append((np.asarray(m["x"], dtype=float), np.asarray(m["y"], dtype=float)))
            else:
                self.knots.append(None)
        self.calibrated = any(k is not None for k in self.knots)
        reference = (data or {}).get("accuracy")
        self.reference_accuracy: float | None = None if reference is None else float(reference)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (rows x classes, each row summing to one) of raw ``scores``."""
        out = np.array(scores, dtype=float, copy=True)
        for j, knots in enumerate(self.knots):
            if knots is not None:
                out[:, j] = np.interp(out[:, j], knots[0], knots[1])
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / max(out.shape[1], 1))
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` with (possibly fractional) positive weights ``positive``."""
    negative = 1.0 - positive
    pos, neg = positive.sum(), negative.sum()
    if pos <= 0 or neg <= 0:
        return None
    order = np.argsort(-score, kind="mergesort")
    s, p, n = score[order], positive[order], negative[order]
    # tied scores form one step of the curve (a diagonal: the trapezoid counts them half)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tpr = np.r_[0.0, np.cumsum(p)[last] / pos]
    fpr = np.r_[0.0, np.cumsum(n)[last] / neg]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def _f1_macro(pred: np.ndarray, truth: np.ndarray) -> float:
    """Macro F1 from predicted class indices and (rows x classes) truth weights (one-hot or expected)."""
    k = truth.shape[1]
    f1 = []
    for c in range(k):
        mine = pred == c
        tp = truth[mine, c].sum()
        fp = mine.sum() - tp
        fn = truth[~mine, c].sum()
        if mine.sum() == 0 and truth[:, c].sum() <= 1e-12:
            continue  # a class neither predicted nor present (sklearn leaves it out too)
        f1.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0)
    return float(np.mean(f1)) if f1 else 0.0


def _roc_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """ROC AUC of class scores against (rows x classes) truth weights: binary, or one-vs-rest macro."""
    k = truth.shape[1]
    if k == 2:
        return _auc(scores[:, 1], truth[:, 1])
    values = [_auc(scores[:, c], truth[:, c]) for c in range(k)]
    found = [v for v in values if v is not None]
    return float(np.mean(found)) if len(found) == k else None


def _matrix(
    probabilities: Sequence[Mapping[str, Any] | None], predictions: Sequence[Any], classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row positions with usable scores, their scores rows x classes, their predicted class index).

    A row is usable when it logged a finite probability for every class; an answer that is not
    one of ``classes`` counts as the class with the highest score. One Python pass collects the
    numbers; the checks are numpy's (millions of batch rows go through here).
    """
    index = {c: j for j, c in enumerate(classes)}
    keep: list[int] = []
    rows: list[list[float]] = []
    preds: list[int] = []
    for i, (proba, pred) in enumerate(zip(probabilities, predictions, strict=True)):
        if not isinstance(proba, Mapping):
            continue
        try:
            row = [float(proba[c]) for c in classes]
        except (KeyError, TypeError, ValueError):
            continue
        keep.append(i)
        rows.append(row)
        preds.append(index.get(_key(pred), -1))
    k = len(classes)
    scores = np.asarray(rows, dtype=float).reshape(-1, k)
    finite = np.isfinite(scores).all(axis=1)
    at = np.asarray(keep, dtype=np.int64)[finite]
    scores = scores[finite]
    answered = np.asarray(preds, dtype=np.int64)[finite]
    unknown = answered < 0
    if unknown.any():
        answered[unknown] = scores[unknown].argmax(axis=1)
    return at, scores, answered


def _key(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Block:
    """Rows logged column-wise (a batch's chunk): class -> its probability per row, the answers,
    and the labels (None: no feedback yet)."""

    probabilities: Mapping[str, np.ndarray]
    predictions: Sequence[Any]
    labels: Sequence[Any]


@dataclass(frozen=True)
class Group:
    """Rows answered by one model version: its calibration, and per row the logged
    probabilities, the answered class and the label (None: no feedback yet); ``blocks``: more
    of its rows held column-wise (batch chunks), after those."""

    calibration: Calibration
    probabilities: Sequence[Mapping[str, Any] | None]
    predictions: Sequence[Any]
    labels: Sequence[Any] | None = None
    blocks: Sequence[Block] = ()

    @functools.cached_property
    def matrix(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(usable row positions, their scores, their answered class index), computed once.
        Positions count the row-wise rows first, then each block's."""
        classes = self.calibration.classes
        parts = [_matrix(self.probabilities, self.predictions, classes)]
        offset = len(self.probabilities)
        for block in self.blocks:
            keep, scores, pred = _block_matrix(block, classes)
            parts.append((keep + offset, scores, pred))
            offset += len(block.predictions)
        if len(parts) == 1:
            return parts[0]
        return (
            np.concatenate([p[0] for p in parts]),
            np.vstack([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )

    @functools.cached_property
    def labelled(self) -> dict[int, Any]:
        """Row position -> label of the rows with feedback (row-wise rows first, then each block's)."""
        out: dict[int, Any] = {}
        if self.labels is not None:
            out.update((i, v) for i, v in enumerate(self.labels) if v is not None)
        offset = len(self.probabilities)
        for block in self.blocks:
            out.update((offset + i, v) for i, v in enumerate(block.labels) if v is not None)
            offset += len(block.predictions)
        return out


def _block_matrix(block: Block, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_matrix` of a column-wise block (no Python object per cell but the answers' keys)."""
    n = len(block.predictions)
    k = len(classes)
    if not n or any(c not in block.probabilities for c in classes):
        return np.zeros(0, dtype=np.int64), np.zeros((0, k)), np.zeros(0, dtype=np.int64)
    scores = np.column_stack([np.asarray(block.probabilities[c], dtype=float) for c in classes])
    index = {c: j for j, c in enumerate(classes)}
    # each distinct answer looked up once (a chunk answers a few classes many times)
    distinct, inverse = np.unique(np.asarray(block.predictions), return_inverse=True)
    lookup = np.array([index.get(_key(v), -1) for v in distinct.tolist()], dtype=np.int64)
    answered = lookup[inverse.reshape(-1)]
    finite = np.isfinite(scores).all(axis=1)
    at = np.flatnonzero(finite)
    scores, answered = scores[finite], answered[finite]
    unknown = answered < 0
    if unknown.any():
        answered[unknown] = scores[unknown].argmax(axis=1)
    return at, scores, answered


def estimate(
    probabilities: Sequence[Mapping[str, Any] | None],
    predictions: Sequence[Any],
    calibration: Calibration,
    labels: Sequence[Any] | None = None,
) -> Estimate:
    """Estimated quality of rows from their class probabilities; realized where ``labels`` has one.

    Args:
        probabilities: Per row, class -> probability as logged (None: not estimated).
        predictions: Per row, the answered class.
        calibration: The model's calibration (:class:`Calibration`; uncalibrated: raw scores).
        labels: Per row, the true label or None (feedback not arrived).
    """
    return estimate_groups([Group(calibration, probabilities, predictions, labels)])


def estimate_groups(groups: Sequence[Group]) -> Estimate:
    """Estimated (and realized) quality of the rows of several versions together.

    Each version's rows are calibrated with its own map; F1 and ROC AUC need one set of
    classes (versions with other classes leave them None, accuracy is still estimated).
    """
    parts = []
    for g in groups:
        classes = g.calibration.classes
        keep, scores, pred = g.matrix
        q = g.calibration.apply(scores) if len(keep) else scores
        truth = None
        if g.labels is not None or g.blocks:
            index = {c: j for j, c in enumerate(classes)}
            truth = np.full(len(keep), -1, dtype=np.int64)
            for position, label in g.labelled.items():
                at = int(np.searchsorted(keep, position))  # keep is ascending
                if at < len(keep) and keep[at] == position:
                    truth[at] = index.get(_key(label), -1)
        parts.append((tuple(classes), scores, q, pred, truth, g.calibration.calibrated))
    out: Estimate = {
        "estimated": int(sum(len(p[1]) for p in parts)),
        "calibrated": bool(parts) and all(p[5] for p in parts),
        "estimated_accuracy": None,
        "estimated_f1_macro": None,
        "estimated_roc_auc": None,
        "labelled": 0,
        "accuracy": None,
        "f1_macro": None,
        "roc_auc": None,
    }
    parts = [p for p in parts if len(p[1]) and len(p[0]) >= 2]
    if not parts:
        return out
    hits = np.concatenate([q[np.arange(len(q)), pred] for _, _, q, pred, _, _ in parts])
    out["estimated_accuracy"] = float(hits.mean())
    same = len({p[0] for p in parts}) == 1
    if same:
        scores = np.vstack([p[1] for p in parts])
        q = np.vstack([p[2] for p in parts])
        pred = np.concatenate([p[3] for p in parts])
        out["estimated_f1_macro"] = _f1_macro(pred, q)
        out["estimated_roc_auc"] = _roc_auc(scores, q)
    # (scores, predicted, truth) of the labelled rows of each part
    labelled = [
        (p[1][t >= 0], p[3][t >= 0], t[t >= 0]) for p in parts if (t := p[4]) is not None and (t >= 0).any()
    ]
    if labelled:
        right = np.concatenate([pred == truth for _, pred, truth in labelled])
        out["labelled"] = len(right)
        out["accuracy"] = float(right.mean())
        if same:
            k = len(parts[0][0])
            truth = np.concatenate([t for _, _, t in labelled])
            onehot = np.zeros((len(truth), k))
            onehot[np.arange(len(truth)), truth] = 1.0
            out["f1_macro"] = _f1_macro(np.concatenate([pr for _, pr, _ in labelled]), onehot)
            out["roc_auc"] = _roc_auc(np.vstack([sc for sc, _, _ in labelled]), onehot)
    return out


def row_hits(group: Group) -> tuple[np.ndarray, np.ndarray]:
    """(row positions with usable probabilities, calibrated probability of the answered class of each)."""
    keep, scores, pred = group.matrix
    if not len(keep):
        return keep, np.zeros(0)
    q = group.calibration.apply(scores)
    return keep, q[np.arange(len(q)), pred]


def realized(
    probabilities: np.ndarray, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float | None]:
    """Realized accuracy, macro F1 and ROC AUC of class-index arrays (for tests and the benchmark)."""
    k = probabilities.shape[1]
    onehot = np.zeros((len(labels), k))
    onehot[np.arange(len(labels)), labels] = 1.0
    return {
        "accuracy": float((predictions == labels).mean()),
        "f1_macro": _f1_macro(predictions, onehot),
        "roc_auc": _roc_auc(probabilities, onehot),
    }
