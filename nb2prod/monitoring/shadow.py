"""A shadow challenger beside the champion: agreement, prediction drift, and both on the same labelled rows.

A shadow version scores the rows the service answered, off the request path; its answers
are logged with the answered row's request id and ``monitor`` = ``shadow``
(:func:`nb2prod.monitoring.window.read_shadow` pairs them). :func:`summarize_shadow` is
what ``nb2prod monitor`` shows; :func:`compare` is the paired test behind ``nb2prod
promote --if-shadow-better`` (exact McNemar for accuracy, paired bootstrap for the other
metrics), on the shadow rows that have a label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np

from nb2prod import metrics as m
from nb2prod.monitoring import quality as ql
from nb2prod.monitoring import stats
from nb2prod.monitoring.window import ShadowRow
from nb2prod.serving import sketch as sk

__all__ = ["Comparison", "ShadowSummary", "compare", "summarize_shadow"]


class ShadowSummary(TypedDict):
    """The shadow of a window.

    ``rows`` shadow answers, ``paired`` of them with the answered row of their request,
    ``agreement``: share of paired rows where both answered the same (classifiers) or
    ``mean_abs_difference`` (regressors); ``prediction_drift``: the challenger's prediction
    drift against the training labels; ``labelled`` paired rows with feedback, and both
    versions' quality on exactly those rows (``champion``, ``challenger``).
    """

    versions: dict[str, int]
    rows: int
    paired: int
    agreement: float | None
    mean_abs_difference: float | None
    prediction_drift: dict[str, Any] | None
    labelled: int
    champion: ql.QualityMetrics
    challenger: ql.QualityMetrics


def _same(a: Any, b: Any) -> bool:
    return ql._label_key(a) == ql._label_key(b)


def _number(x: Any) -> float | None:
    return ql._number(x)


def summarize_shadow(
    rows: Sequence[ShadowRow], classifier: bool, target_profile: Mapping[str, Any] | None
) -> ShadowSummary:
    """What ``nb2prod monitor`` shows of the shadow rows of a window."""
    versions: dict[str, int] = {}
    for r in rows:
        versions[r.shadow_version] = versions.get(r.shadow_version, 0) + 1
    paired = [r for r in rows if r.answered_version is not None]
    agreement = mad = None
    if paired and classifier:
        agreement = float(np.mean([_same(r.shadow, r.answered) for r in paired]))
    elif paired:
        diffs = [
            abs(a - b)
            for a, b in ((_number(r.shadow), _number(r.answered)) for r in paired)
            if a is not None and b is not None
        ]
        mad = float(np.mean(diffs)) if diffs else None
    drift = None
    if target_profile and rows:
        counts = np.asarray(sk.Sketcher(target_profile)([r.shadow for r in rows]), dtype=np.int64)
        drift = stats.column_drift(target_profile, counts).to_dict()
    labelled = [r for r in paired if r.label is not None]
    return {
        "versions": versions,
        "rows": len(rows),
        "paired": len(paired),
        "agreement": agreement,
        "mean_abs_difference": mad,
        "prediction_drift": drift,
        "labelled": len(labelled),
        "champion": ql.quality_metrics([(r.answered, r.label) for r in labelled], classifier),
        "challenger": ql.quality_metrics([(r.shadow, r.label) for r in labelled], classifier),
    }


@dataclass(frozen=True)
class Comparison:
    """The paired comparison of a challenger with the champion on the same labelled rows.

    Attributes:
        metric: The metric compared (``accuracy``, ``f1_macro``, ``mae``, ``rmse``).
        test: ``mcnemar_exact`` or ``paired_bootstrap``.
        rows: Labelled shadow rows compared.
        champion: The champion's value on them.
        challenger: The challenger's value on them.
        improvement: How much better the challenger is (positive: better, whichever way the metric goes).
        p_value: One-sided p-value that the challenger is not better.
        only_challenger: Rows only the challenger got right (McNemar).
        only_champion: Rows only the champion got right (McNemar).
    """

    metric: str
    test: str
    rows: int
    champion: float | None
    challenger: float | None
    improvement: float | None
    p_value: float
    only_challenger: int = 0
    only_champion: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric_fn(metric: str) -> Any:
    """Metric of an (n, 2) array of (prediction key, label key) rows, signed so higher is better."""
    if metric == m.F1_MACRO:

        def f1(rows: np.ndarray) -> float:
            q = ql.quality_metrics([(p, y) for p, y in rows.tolist()], True)
            return float(q.get("f1_macro") or 0.0)

        return f1
    if metric in (m.MAE, m.RMSE):

        def err(rows: np.ndarray) -> float:
            e = rows[:, 0].astype(float) - rows[:, 1].astype(float)
            return -float(np.mean(np.abs(e)) if metric == m.MAE else np.sqrt(np.mean(e**2)))

        return err
    raise ValueError(metric)


def compare(
    rows: Sequence[ShadowRow],
    classifier: bool,
    metric: str | None = None,
    *,
    version: str | None = None,
    rounds: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Paired comparison of the shadow ``version`` with the answered (champion) rows it shadowed.

    Args:
        rows: Shadow rows (with the answered row and the label where known).
        classifier: The task (the default metric: ``accuracy``, else ``mae``).
        metric: ``accuracy`` (exact McNemar), or ``f1_macro``/``mae``/``rmse`` (paired bootstrap).
        version: Only the shadow rows of this version (None: all).
        rounds: Bootstrap resamples.
        seed: Bootstrap seed.
    """
    metric = metric or (m.ACCURACY if classifier else m.MAE)
    use = [
        r
        for r in rows
        if r.answered_version is not None
        and r.label is not None
        and (version is None or r.shadow_version == str(version))
    ]
    if metric == m.ACCURACY:
        champ = np.array([_same(r.answered, r.label) for r in use], dtype=bool)
        chall = np.array([_same(r.shadow, r.label) for r in use], dtype=bool)
        b = int((chall & ~champ).sum())
        c = int((champ & ~chall).sum())
        a0 = float(champ.mean()) if use else None
        a1 = float(chall.mean()) if use else None
        return Comparison(
            metric=metric,
            test="mcnemar_exact",
            rows=len(use),
            champion=a0,
            challenger=a1,
            improvement=None if a0 is None or a1 is None else a1 - a0,
            p_value=stats.mcnemar_exact(b, c),
            only_challenger=b,
            only_champion=c,
        )
    fn = _metric_fn(metric)
    if metric in (m.MAE, m.RMSE):
        use = [r for r in use if None not in (_number(r.shadow), _number(r.answered), _number(r.label))]
        champ_rows = np.array([(_number(r.answered), _number(r.label)) for r in use], dtype=float).reshape(
            -1, 2
        )
        chall_rows = np.array([(_number(r.shadow), _number(r.label)) for r in use], dtype=float).reshape(
            -1, 2
        )
    else:
        champ_rows = np.array(
            [(ql._label_key(r.answered), ql._label_key(r.label)) for r in use], dtype=object
        ).reshape(-1, 2)
        chall_rows = np.array(
            [(ql._label_key(r.shadow), ql._label_key(r.label)) for r in use], dtype=object
        ).reshape(-1, 2)
    observed, p = stats.paired_bootstrap(champ_rows, chall_rows, fn, rounds=rounds, seed=seed)
    sign = -1.0 if metric in (m.MAE, m.RMSE) else 1.0
    v0 = sign * fn(champ_rows) if use else None
    v1 = sign * fn(chall_rows) if use else None
    return Comparison(
        metric=metric,
        test="paired_bootstrap",
        rows=len(use),
        champion=v0,
        challenger=v1,
        improvement=observed if use else None,
        p_value=p,
    )
