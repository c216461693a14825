"""The monitoring report of a served model: drift, live quality, refused inputs, canary split.

:func:`build_report` reads a prediction store (``serving/store.py``) over a time
window and returns a :class:`MonitorReport`; :func:`render_text` turns it into the
terminal table, ``nb2prod.monitoring.html.render_html`` into an HTML page.

What comes from where:

* Drift: the minute sketches (``sketches`` table) of the window, summed over writers,
  per model version and per time bucket, one ``numpy.bincount`` per column
  (``serving/sketch.py``); never a scan of the logged rows. Sketches have minute
  resolution: a minute is in the window when its start is in ``[since, until)``, with
  ``since`` rounded down to its minute. A store with no sketch in the window (a
  service that logs rows but no sketches) is sketched from its ``predictions`` rows
  instead (a scan; ``source`` says which).
* Rows per model version (the canary split): the sketches' row counts.
* Live quality: ``predictions`` joined with ``feedback`` on request id, predictions
  logged in ``[since, until)``: accuracy and macro F1 (classifiers, as scikit-learn's
  ``accuracy_score`` / ``f1_score(average="macro")``), MAE and RMSE (regressors).
* Events in ``[since, until)``: invalid inputs by reason and field, fallbacks and
  errors per model version.

Status: ``insufficient_data`` under ``MIN_ROWS`` (50) logged rows in the window,
else ``drift`` when a feature or the prediction drifted (``stats.column_drift``), else ``ok``.
"""

from __future__ import annotations

import functools
import gc
import itertools
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import numpy as np

from nb2prod.exceptions import MonitorError
from nb2prod.monitoring import stats
from nb2prod.serving import sketch as sk
from nb2prod.serving.store import PREDICTION_COLUMN, Store, is_sqlite_file

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["MIN_ROWS", "MonitorReport", "build_report", "format_value", "parse_since", "render_text", "table"]

MIN_ROWS = 50
MAX_POINTS = 50
BUCKET = 60
# Time-series steps: the smallest giving at most MAX_POINTS points over the window.
_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """A window start as unix seconds: an ISO-8601 time or a duration back from ``now``.

    Args:
        text: ``2026-11-25T10:00:00`` (UTC unless it carries an offset, ``Z`` or
            ``+02:00``), ``2026-11-25`` (midnight UTC), or a duration ``30s``, ``30m``,
            ``2h``, ``7d``, ``1w``.
        now: The current time for durations (default ``time.time()``).

    Raises:
        MonitorError: Anything else.
    """
    now = time.time() if now is None else now
    raw = str(text).strip()
    match = _DURATION.match(raw)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    try:
        at = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in "zZ" and raw else raw)
    except ValueError:
        raise MonitorError(
            f"cannot read {text!r} as a time or a duration",
            hint="use an ISO-8601 time (2026-11-25T10:00:00, UTC unless it has an offset) "
            "or a duration back from now: 30s, 30m, 2h, 7d",
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


@dataclass
class MonitorReport:
    """Drift and performance of a served model over a window of its prediction store.

    Attributes:
        store: The store read.
        since: Window start (unix seconds; None: from the first record).
        until: Window end (exclusive).
        generated_at: When the report was built.
        status: ``"ok"``, ``"drift"`` or ``"insufficient_data"``.
        source: ``"sketches"``, ``"predictions"`` (sketched from logged rows) or ``"none"``.
        rows: Logged rows in the window.
        min_rows: Fewest rows for a verdict.
        thresholds: ``psi``, ``p_value`` and ``min_effect`` of the drift decision.
        features: Feature -> its drift (``stats.ColumnDrift``).
        prediction: Prediction drift against the training labels' profile (None without one).
        drifted: Drifted features, plus ``"__prediction__"``.
        versions: Model version -> ``rows``, ``drifted``, ``psi`` (feature -> PSI), ``fallbacks``, ``errors``.
        distributions: Column -> ``labels``, ``reference`` and ``live`` fractions on its PSI bins.
        over_time: ``step`` (seconds), ``times`` (bucket starts), ``rows``, ``psi`` (column -> values,
            None where a bucket has no row), and ``quality`` (metric -> values).
        quality: Live quality from feedback: ``task``, ``labelled``, the metrics, and ``by_version``.
        events: ``invalid`` (``total``, ``by_reason``, ``by_field``), ``fallback`` and ``error`` (per version).
        skipped_sketches: Stored sketches that do not fit the reference (a changed profile).
    """

    store: str
    since: float | None
    until: float
    generated_at: float
    status: str
    source: str
    rows: int
    min_rows: int
    thresholds: dict[str, float]
    features: dict[str, stats.ColumnDrift] = field(default_factory=dict)
    prediction: stats.ColumnDrift | None = None
    drifted: list[str] = field(default_factory=list)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)
    over_time: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    skipped_sketches: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (``json.dumps(..., allow_nan=False)`` accepts it)."""
        return _json_safe(
            {
                "store": self.store,
                "since": self.since,
                "until": self.until,
                "generated_at": self.generated_at,
                "status": self.status,
                "source": self.source,
                "rows": self.rows,
                "min_rows": self.min_rows,
                "thresholds": self.thresholds,
                "features": {k: v.to_dict() for k, v in self.features.items()},
                "prediction": None if self.prediction is None else self.prediction.to_dict(),
                "drifted": self.drifted,
                "versions": self.versions,
                "distributions": self.distributions,
                "over_time": self.over_time,
                "quality": self.quality,
                "events": self.events,
                "skipped_sketches": self.skipped_sketches,
            }
        )


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


# --------------------------------------------------------------------------- drift from sketches


def _step(span: float) -> int:
    for step in _STEPS:
        if span / step <= MAX_POINTS:
            return step
    return int(math.ceil(span / MAX_POINTS / 86400) * 86400)


def _columns(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Column -> reference profile: the features, then ``__prediction__`` (the target's profile)."""
    cols: dict[str, Mapping[str, Any]] = dict(manifest.get("reference") or {})
    target = manifest.get("target") or {}
    if target.get("profile"):
        cols[PREDICTION_COLUMN] = target["profile"]
    return cols


def _fetch_sketches(store: Store, since: float | None, until: float) -> list[tuple[Any, ...]]:
    params: dict[str, Any] = {"until": math.ceil(until)}
    where = "bucket < :until"
    if since is not None:
        params["since"] = int(since // BUCKET * BUCKET)
        where += " AND bucket >= :since"
    return store.query(f"SELECT bucket, model_version, col, n, counts FROM sketches WHERE {where}", params)


def _sketch_rows(
    store: Store, columns: Mapping[str, Mapping[str, Any]], since: float | None, until: float
) -> list[tuple[Any, ...]]:
    """Sketch rows (bucket, version, column, n, blob) built from logged predictions (no sketches stored)."""
    params: dict[str, Any] = {"until": until}
    where = "ts < :until"
    if since is not None:
        params["since"] = since
        where += " AND ts >= :since"
    rows = store.query(
        f"SELECT ts, model_version, features, prediction FROM predictions WHERE {where}", params
    )
    groups: dict[tuple[int, str], list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    for ts, version, features, prediction in rows:
        groups[(int(float(ts) // BUCKET * BUCKET), str(version or ""))].append(
            (json.loads(features), json.loads(prediction).get("prediction"))
        )
    sketchers = {c: sk.Sketcher(p) for c, p in columns.items()}
    out: list[tuple[Any, ...]] = []
    for (bucket, version), items in groups.items():
        for col, sketcher in sketchers.items():
            if col == PREDICTION_COLUMN:
                values = [pred for _, pred in items]
            else:
                values = [feats.get(col) for feats, _ in items]
            out.append((bucket, version, col, len(items), sk.encode(sketcher(values))))
    return out


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


def _quality(pairs: Sequence[tuple[Any, Any]], classifier: bool) -> dict[str, Any]:
    """Metrics of (prediction, label) pairs."""
    if classifier:
        preds = [_label_key(p) for p, _ in pairs]
        labels = [_label_key(y) for _, y in pairs]
        n = len(labels)
        if n == 0:
            return {"labelled": 0, "accuracy": None, "macro_f1": None}
        correct = sum(p == y for p, y in zip(preds, labels, strict=True))
        tp: Counter[str] = Counter(y for p, y in zip(preds, labels, strict=True) if p == y)
        n_pred, n_true = Counter(preds), Counter(labels)
        classes = set(n_pred) | set(n_true)
        f1 = [2 * tp[c] / (n_pred[c] + n_true[c]) for c in classes]
        return {"labelled": n, "accuracy": correct / n, "macro_f1": float(np.mean(f1))}
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


def _feedback_pairs(store: Store, since: float | None, until: float) -> list[tuple[float, str, Any, Any]]:
    # feedback drives the join (CROSS JOIN fixes SQLite's loop order): labelled rows are few
    params: dict[str, Any] = {"until": until}
    where = "p.ts < :until"
    if since is not None:
        params["since"] = since
        where += " AND p.ts >= :since"
    rows = store.query(
        "SELECT p.ts, p.model_version, p.prediction, f.label FROM feedback f "
        f"CROSS JOIN predictions p WHERE p.request_id = f.request_id AND {where}",
        params,
    )
    out = []
    for ts, version, prediction, label in rows:
        try:
            out.append(
                (float(ts), str(version or ""), json.loads(prediction).get("prediction"), json.loads(label))
            )
        except (ValueError, AttributeError):
            continue
    return out


def _events(store: Store, since: float | None, until: float) -> dict[str, Any]:
    params: dict[str, Any] = {"until": until}
    where = "ts < :until"
    if since is not None:
        params["since"] = since
        where += " AND ts >= :since"
    rows = store.query(
        f"SELECT kind, model_version, reason, field, COUNT(*) FROM events WHERE {where} "
        "GROUP BY kind, model_version, reason, field",
        params,
    )
    by_reason: Counter[str] = Counter()
    by_field: Counter[str] = Counter()
    fallback: Counter[str] = Counter()
    error: Counter[str] = Counter()
    for kind, version, reason, fld, count in rows:
        if kind == "invalid":
            by_reason[str(reason or "")] += int(count)
            by_field[str(fld or "")] += int(count)
        elif kind == "fallback":
            fallback[str(version or "")] += int(count)
        elif kind == "error":
            error[str(version or "")] += int(count)
    return {
        "invalid": {
            "total": sum(by_reason.values()),
            "by_reason": dict(by_reason.most_common()),
            "by_field": dict(by_field.most_common()),
        },
        "fallback": dict(fallback),
        "error": dict(error),
    }


def _bin_labels(profile: Mapping[str, Any]) -> list[str]:
    kind = sk.layout(profile)
    if kind == sk.NUMERIC:
        edges = [float(e) for e in profile["drift_edges"]]
        return [f"[{_short(a)}, {_short(b)})" for a, b in itertools.pairwise(edges)]
    if kind == sk.CATEGORICAL:
        return [k for k in profile["frequencies"] if k != sk.OTHER] + [sk.OTHER]
    return []


def _short(x: float) -> str:
    return "-inf" if x == -math.inf else "inf" if x == math.inf else f"{x:.4g}"


def _gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with the cyclic GC paused: the ~90k fetched rows of 5 objects each that a
    report builds and groups set off full GC passes, and none of them form cycles."""

    @functools.wraps(fn)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


@_gc_paused
def build_report(
    store: str,
    manifest: Mapping[str, Any],
    *,
    since: float | None = None,
    until: float | None = None,
    psi_threshold: float = stats.PSI_THRESHOLD,
    p_threshold: float = stats.P_THRESHOLD,
    min_effect: float = stats.MIN_EFFECT,
    now: float | None = None,
) -> MonitorReport:
    """Drift, live quality, events and canary split of a prediction store over ``[since, until)``.

    Args:
        store: The prediction store: a path, ``sqlite:///path`` or a SQLAlchemy URL. A
            missing SQLite file reads as empty.
        manifest: The Bento's manifest (``reference``, ``target``, ``model``).
        since: Window start (unix seconds; see :func:`parse_since`); None: everything.
        until: Window end, exclusive; None: now.
        psi_threshold: PSI above which a column drifted.
        p_threshold: Test p-value under which a column drifted (with ``min_effect``).
        min_effect: Smallest KS D / total variation distance counting as drift.
        now: The current time (default ``time.time()``).

    Raises:
        MonitorError: ``since`` is not before ``until``, or the store cannot be read.
    """
    now = time.time() if now is None else now
    until = now if until is None else float(until)
    if since is not None and since >= until:
        raise MonitorError(
            f"the window is empty: since ({_iso(since)}) is not before until ({_iso(until)})",
            hint="pass an earlier --since or a later --until",
        )
    columns = _columns(manifest)
    handle = Store(store, readonly=is_sqlite_file(store))
    try:
        try:
            rows = _fetch_sketches(handle, since, until)
            source = "sketches" if rows else "none"
            if not rows:
                rows = _sketch_rows(handle, columns, since, until)
                source = "predictions" if rows else "none"
            pairs = _feedback_pairs(handle, since, until)
            events = _events(handle, since, until)
        except MonitorError:
            raise
        except Exception as exc:
            raise MonitorError(
                f"cannot read the prediction store {store}: {type(exc).__name__}: {exc}",
                hint="check the path or URL (nb2prod monitor NAME --store ...)",
            ) from exc
    finally:
        handle.close()

    thresholds = {"psi": psi_threshold, "p_value": p_threshold, "min_effect": min_effect}
    report = MonitorReport(
        store=store,
        since=since,
        until=until,
        generated_at=now,
        status="insufficient_data",
        source=source,
        rows=0,
        min_rows=MIN_ROWS,
        thresholds=thresholds,
        events=events,
    )
    # columns of the fetched rows (zip(*rows) transposes in C: 90k rows in a few ms)
    buckets_t, versions_t, cols_t, ns_t, blobs_t = zip(*rows, strict=True) if rows else ((), (), (), (), ())
    buckets = np.array(buckets_t, dtype=np.int64)
    first = int(buckets.min()) if rows else None
    start = since if since is not None else (first if first is not None else until - BUCKET)
    start = float(start) // BUCKET * BUCKET
    step = _step(max(until - start, BUCKET))
    n_times = max(1, math.ceil((until - start) / step))
    raw_versions = sorted(set(versions_t), key=str)
    vindex = {v: i for i, v in enumerate(raw_versions)}
    versions = [str(v) for v in raw_versions]
    n_v = max(1, len(versions))
    n_groups = n_v * n_times
    # group of each row: version x time bucket
    times = np.clip((buckets - int(start)) // step, 0, n_times - 1)
    vcodes = np.array([vindex[v] for v in versions_t], dtype=np.int64)
    group_of = vcodes * n_times + times if rows else np.zeros(0, dtype=np.int64)
    row_n = np.array(ns_t, dtype=np.int64)
    by_col: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cols_t):
        by_col[c].append(i)
    n_by = {
        col: np.bincount(group_of[idx], weights=row_n[idx], minlength=n_groups)
        for col, idx in by_col.items()
        if col in columns
    }
    # every logged row is sketched in every column: the row count of a group is the largest column count
    group_rows = (
        np.rint(np.max(np.vstack(list(n_by.values())), axis=0)).astype(np.int64)
        if n_by
        else np.zeros(n_groups, dtype=np.int64)
    )
    rows_vt = group_rows.reshape(n_v, n_times)
    report.rows = int(rows_vt.sum())

    quality_task = "classification" if (manifest.get("model") or {}).get("is_classifier") else "regression"
    psi_time: dict[str, list[float | None]] = {}
    version_psi: dict[str, dict[str, float | None]] = {v: {} for v in versions}
    version_drifted: dict[str, list[str]] = {v: [] for v in versions}
    kwargs = {"psi_threshold": psi_threshold, "p_threshold": p_threshold, "min_effect": min_effect}
    for col, profile in columns.items():
        size = sk.sketch_size(profile)
        idx = by_col.get(col, [])
        blobs = [blobs_t[i] for i in idx]
        matrix, skipped = sk.sum_blobs(blobs, group_of[idx], n_groups, size)
        report.skipped_sketches += skipped
        cube = matrix.reshape(n_v, n_times, size)
        total = cube.sum(axis=(0, 1))
        drift = stats.column_drift(profile, total, **kwargs)
        if col == PREDICTION_COLUMN:
            report.prediction = drift
        else:
            report.features[col] = drift
        if drift.drifted:
            report.drifted.append(col)
        bins = sk.psi_bins(profile)
        if bins:
            expected = stats.expected_fractions(profile)
            live = total[1 : 1 + bins]
            report.distributions[col] = {
                "labels": _bin_labels(profile),
                "reference": [float(v) for v in np.asarray(expected) / max(sum(expected), 1e-12)],
                "live": [float(v) / live.sum() if live.sum() else 0.0 for v in live],
            }
            per_time = cube.sum(axis=0)[:, 1 : 1 + bins]
            psi_time[col] = stats.psi_rows(expected, per_time)
        for i, v in enumerate(versions):
            # one version: its drift is the overall one (saves a KS p-value per column)
            vd = drift if len(versions) == 1 else stats.column_drift(profile, cube[i].sum(axis=0), **kwargs)
            version_psi[v][col] = vd.psi
            if vd.drifted:
                version_drifted[v].append(col)

    classifier = quality_task == "classification"
    by_version_pairs: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    by_time_pairs: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for ts, version, prediction, label in pairs:
        by_version_pairs[version].append((prediction, label))
        by_time_pairs[min(n_times - 1, max(0, int((ts - start) // step)))].append((prediction, label))
    overall = _quality([(p, y) for _, _, p, y in pairs], classifier)
    report.quality = {
        "task": quality_task,
        **overall,
        "by_version": {v: _quality(ps, classifier) for v, ps in sorted(by_version_pairs.items())},
    }
    metric_names = ("accuracy", "macro_f1") if classifier else ("mae", "rmse")
    per_time_quality = [_quality(by_time_pairs.get(t, []), classifier) for t in range(n_times)]
    report.over_time = {
        "step": step,
        "times": [start + t * step for t in range(n_times)],
        "rows": [int(v) for v in rows_vt.sum(axis=0)],
        "psi": psi_time,
        "quality": {m: [q.get(m) for q in per_time_quality] for m in metric_names},
        "labelled": [q["labelled"] for q in per_time_quality],
    }
    for i, v in enumerate(versions):
        report.versions[v] = {
            "rows": int(rows_vt[i].sum()),
            "share": float(rows_vt[i].sum() / report.rows) if report.rows else 0.0,
            "drifted": version_drifted[v],
            "psi": version_psi[v],
            "fallbacks": int(events["fallback"].get(v, 0)),
            "errors": int(events["error"].get(v, 0)),
        }
    if report.rows < MIN_ROWS:
        report.status = "insufficient_data"
    else:
        report.status = "drift" if report.drifted else "ok"
    return report


# --------------------------------------------------------------------------- text


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_value(x: Any, digits: int = 4) -> str:
    """A number for a table cell: ``-`` for missing, thousands separators, small values in e-notation."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -(digits - 1):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None
) -> str:
    """Plain-text table: columns padded to their widest cell, numbers right-aligned."""
    right = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


VERSION_HEADERS = ["version", "rows", "share", "fallbacks", "errors", "drifted"]


def version_rows(report: MonitorReport) -> list[list[str]]:
    """One row per model version (columns :data:`VERSION_HEADERS`), for the text and HTML reports."""
    return [
        [
            v,
            format_value(info["rows"]),
            f"{100 * info['share']:.1f}%",
            format_value(info["fallbacks"]),
            format_value(info["errors"]),
            ", ".join(info["drifted"]) or "-",
        ]
        for v, info in report.versions.items()
    ]


def quality_table(quality: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (all labelled rows, then each version) of the live-quality table."""
    names = ("accuracy", "macro_f1") if quality.get("task") == "classification" else ("mae", "rmse")
    rows = [["all", format_value(quality.get("labelled", 0)), *(format_value(quality.get(m)) for m in names)]]
    rows += [
        [v, format_value(m["labelled"]), *(format_value(m.get(k)) for k in names)]
        for v, m in quality.get("by_version", {}).items()
    ]
    return ["version", "labelled", *names], rows


def drift_row(name: str, d: stats.ColumnDrift) -> list[str]:
    """One row of the drift table (the terminal table and the HTML report share it)."""
    return [
        name,
        format_value(d.n),
        format_value(d.nulls),
        format_value(d.psi),
        d.test or "-",
        format_value(d.statistic),
        format_value(d.p_value),
        format_value(d.effect),
        "DRIFT" if d.drifted else "",
    ]


def render_text(report: MonitorReport) -> str:
    """The report as plain aligned text for a terminal."""
    out = [
        f"status: {report.status}   rows: {report.rows:,}   window: {_iso(report.since)} .. {_iso(report.until)}",
        f"source: {report.source}   thresholds: PSI > {report.thresholds['psi']}, "
        f"p < {report.thresholds['p_value']} with effect >= {report.thresholds['min_effect']}",
    ]
    if report.status == "insufficient_data":
        out.append(f"fewer than {report.min_rows} logged rows in the window: no verdict")
    if report.drifted:
        out.append("drifted: " + ", ".join(report.drifted))
    out.append("")
    headers = ["column", "n", "nulls", "psi", "test", "statistic", "p_value", "effect", ""]
    rows = [drift_row(name, d) for name, d in report.features.items()]
    if report.prediction is not None:
        rows.append(drift_row(PREDICTION_COLUMN, report.prediction))
    if rows:
        out += [
            "Drift",
            table(headers, rows, right=[False, True, True, True, False, True, True, True, False]),
            "",
        ]
    if report.versions:
        out += [
            "Model versions",
            table(
                VERSION_HEADERS,
                version_rows(report),
                right=[False, True, True, True, True, False],
            ),
            "",
        ]
    q = report.quality
    headers, qrows = quality_table(q)
    out += [f"Live quality ({q.get('task', '-')}, from feedback)", table(headers, qrows), ""]
    inv = report.events.get("invalid", {})
    out.append(f"Invalid inputs: {inv.get('total', 0):,}")
    if inv.get("by_reason"):
        out.append(
            table(["reason", "count"], [[k or "-", format_value(c)] for k, c in inv["by_reason"].items()])
        )
    if inv.get("by_field"):
        out.append(
            table(["field", "count"], [[k or "-", format_value(c)] for k, c in inv["by_field"].items()])
        )
    if report.skipped_sketches:
        out.append(f"skipped sketches (do not fit the reference): {report.skipped_sketches:,}")
    return "\n".join(out).rstrip() + "\n"
