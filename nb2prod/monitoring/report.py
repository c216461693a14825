"""The monitoring report of a served model: drift, live quality, refused inputs, canary split.

:func:`build_report` reads a prediction store over a time window (:mod:`.window`) and
returns a :class:`MonitorReport`; ``nb2prod.render.report`` turns it into the terminal
table (``render_text``) or an HTML page (``render_html``).

What comes from where:

* Drift: the minute sketches of the window, summed over writers, per model version and
  per time bucket, one ``numpy.bincount`` per column (``serving/sketch.py``); never a
  scan of the logged rows (unless the store holds no sketch: :mod:`.window`). The
  statistics and the decision are :mod:`.stats`.
* Rows per model version (the canary split): the sketches' row counts.
* Live quality: predictions of the window with their feedback (:mod:`.quality`).
* Events in ``[since, until)``: invalid inputs by reason and field, fallbacks and
  errors per model version.
* Traffic: logged rows per source (``online``, ``batch`` from ``nb2prod score``,
  ``shadow``) and version. Shadow rows never count as traffic: they are the
  ``shadow`` section (:mod:`.shadow`): agreement with the champion, the challenger's
  prediction drift, both on the same labelled rows.
* Estimated quality (classifiers whose rows logged probabilities): :mod:`.estimate`
  from each version's calibration in the manifest, overall, per version and per time
  bucket; the realized value beside it where feedback exists.

Status: ``insufficient_data`` under ``MIN_ROWS`` (50) logged rows in the window,
else ``drift`` when a feature or the prediction drifted (``stats.column_drift``), else ``ok``.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypedDict, TypeVar

import numpy as np

from nb2prod.exceptions import MonitorError
from nb2prod.monitoring import estimate as est
from nb2prod.monitoring import quality as ql
from nb2prod.monitoring import shadow as sh
from nb2prod.monitoring import stats
from nb2prod.monitoring.window import (
    BUCKET,
    SHADOW,
    Events,
    iso,
    no_events,
    parse_since,
    read_scored,
    read_shadow,
    read_window,
)
from nb2prod.serving import sketch as sk
from nb2prod.serving.store import PREDICTION_COLUMN

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "MIN_ROWS",
    "Distribution",
    "MonitorReport",
    "OverTime",
    "Reference",
    "VersionStats",
    "build_report",
    "parse_since",
    "reference_of",
]

MIN_ROWS = 50
MAX_POINTS = 50
# Time-series steps: the smallest giving at most MAX_POINTS points over the window.
_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


class VersionStats(TypedDict):
    """One model version in the window: its ``rows`` and ``share`` of them, the columns that
    ``drifted`` on its rows alone, ``psi`` per column, ``fallbacks`` and ``errors``."""

    rows: int
    share: float
    drifted: list[str]
    psi: dict[str, float | None]
    fallbacks: int
    errors: int


class EstimateSection(est.Estimate, total=False):
    """Label-free quality of the window (see :mod:`.estimate`): overall, and ``by_version``.

    ``reference_accuracy``: the accuracy on the test set at capture (weighted by each
    version's rows); ``estimated_drop``: how far the estimate fell below it.
    """

    by_version: dict[str, est.Estimate]
    reference_accuracy: float | None
    estimated_drop: float | None


class Distribution(TypedDict):
    """A column on its PSI bins: bin ``labels``, ``reference`` and ``live`` fractions."""

    labels: list[str]
    reference: list[float]
    live: list[float]


class OverTime(TypedDict):
    """The window in ``step``-second buckets starting at ``times``: ``rows``, ``psi`` per column
    (None where a bucket has no row), ``quality`` per metric and ``labelled`` rows per bucket,
    ``estimated`` quality per metric (label-free) and ``estimated_rows`` per bucket."""

    step: int
    times: list[float]
    rows: list[int]
    psi: dict[str, list[float | None]]
    quality: dict[str, list[float | None]]
    labelled: list[int]
    estimated: dict[str, list[float | None]]
    estimated_rows: list[int]


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
        versions: Model version -> its :class:`VersionStats`.
        distributions: Column -> its :class:`Distribution` on its PSI bins.
        over_time: The window in time buckets (:class:`OverTime`; empty before a build).
        quality: Live quality from feedback (:class:`~nb2prod.monitoring.quality.Quality`).
        events: ``invalid`` (``total``, ``by_reason``, ``by_field``), ``fallback`` and ``error`` (per version).
        skipped_sketches: Stored sketches that do not fit the reference (a changed profile).
        traffic: Logged rows per source (``online``, ``batch``, ``shadow``) and version.
        estimate: Estimated quality from logged probabilities (classifiers; empty otherwise).
        shadow: The shadow challenger's figures (:class:`~.shadow.ShadowSummary`), None without shadow rows.
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
    versions: dict[str, VersionStats] = field(default_factory=dict)
    distributions: dict[str, Distribution] = field(default_factory=dict)
    over_time: OverTime = field(default_factory=lambda: _no_time())
    quality: ql.Quality = field(default_factory=lambda: ql.Quality())
    events: Events = field(default_factory=lambda: no_events())
    skipped_sketches: int = 0
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)
    estimate: EstimateSection = field(default_factory=lambda: EstimateSection())
    shadow: sh.ShadowSummary | None = None

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
                "traffic": self.traffic,
                "estimate": self.estimate,
                "shadow": self.shadow,
            }
        )


def _no_time() -> OverTime:
    return {
        "step": BUCKET,
        "times": [],
        "rows": [],
        "psi": {},
        "quality": {},
        "labelled": [],
        "estimated": {},
        "estimated_rows": [],
    }


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


@dataclass(frozen=True)
class Reference:
    """What the report needs of a Bento's manifest.

    Attributes:
        columns: Column -> reference profile: the features, then ``__prediction__`` (the
            training target's profile) when the manifest has one.
        classifier: Whether the model is a classifier (the live quality metrics follow).
        calibrations: Model version -> its calibration of class probabilities (classifiers
            with probabilities; the map may be None: raw scores).
    """

    columns: dict[str, Mapping[str, Any]]
    classifier: bool
    calibrations: dict[str, est.Calibration] = field(default_factory=dict)


def reference_of(manifest: Mapping[str, Any]) -> Reference:
    """The one read of the Bento manifest (``reference``, ``target``, ``model``, ``models``) in monitoring."""
    cols: dict[str, Mapping[str, Any]] = dict(manifest.get("reference") or {})
    target = manifest.get("target") or {}
    if target.get("profile"):
        cols[PREDICTION_COLUMN] = target["profile"]
    main = manifest.get("model") or {}
    carried = dict(manifest.get("models") or {})
    if not carried and manifest.get("model_version") is not None:
        carried = {str(manifest["model_version"]): main}
    calibrations = {
        str(v): est.Calibration(info.get("calibration"), [str(c) for c in info["classes"]])
        for v, info in carried.items()
        if info.get("is_classifier") and info.get("classes")
    }
    return Reference(columns=cols, classifier=bool(main.get("is_classifier")), calibrations=calibrations)


def _step(span: float) -> int:
    for step in _STEPS:
        if span / step <= MAX_POINTS:
            return step
    return int(math.ceil(span / MAX_POINTS / 86400) * 86400)


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
        manifest: The Bento's manifest (``reference``, ``target``, ``model``; read by :func:`reference_of`).
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
            f"the window is empty: since ({iso(since)}) is not before until ({iso(until)})",
            hint="pass an earlier --since or a later --until",
        )
    ref = reference_of(manifest)
    columns = ref.columns
    window = read_window(store, columns, since, until)
    rows = window.sketches

    thresholds = {"psi": psi_threshold, "p_value": p_threshold, "min_effect": min_effect}
    report = MonitorReport(
        store=store,
        since=since,
        until=until,
        generated_at=now,
        status="insufficient_data",
        source=window.source,
        rows=0,
        min_rows=MIN_ROWS,
        thresholds=thresholds,
        events=window.events,
    )
    # columns of the fetched rows (zip(*rows) transposes in C: 90k rows in a few ms)
    buckets_t, versions_t, cols_t, ns_t, blobs_t = zip(*rows, strict=True) if rows else ((), (), (), (), ())
    buckets = np.array(buckets_t, dtype=np.int64)
    first = int(buckets.min()) if rows else None
    last = int(buckets.max()) + BUCKET if rows else None
    start = since if since is not None else (first if first is not None else until - BUCKET)
    start = float(start) // BUCKET * BUCKET
    if first is not None:  # the series starts and stops at the data, not at the asked window
        start = max(start, float(first))
    end = min(until, float(last)) if last is not None else until
    step = _step(max(end - start, BUCKET))
    n_times = max(1, math.ceil((end - start) / step))
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

    psi_time: dict[str, list[float | None]] = {}
    version_psi: dict[str, dict[str, float | None]] = {v: {} for v in versions}
    version_drifted: dict[str, list[str]] = {v: [] for v in versions}

    def decide(profile: Mapping[str, Any], counts: np.ndarray) -> stats.ColumnDrift:
        return stats.column_drift(
            profile, counts, psi_threshold=psi_threshold, p_threshold=p_threshold, min_effect=min_effect
        )

    for col, profile in columns.items():
        size = sk.sketch_size(profile)
        idx = by_col.get(col, [])
        blobs = [blobs_t[i] for i in idx]
        matrix, skipped = sk.sum_blobs(blobs, group_of[idx], n_groups, size)
        report.skipped_sketches += skipped
        cube = matrix.reshape(n_v, n_times, size)
        total = cube.sum(axis=(0, 1))
        drift = decide(profile, total)
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
            vd = drift if len(versions) == 1 else decide(profile, cube[i].sum(axis=0))
            version_psi[v][col] = vd.psi
            if vd.drifted:
                version_drifted[v].append(col)

    labelled = window.labelled
    by_time_pairs: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for ts, _, prediction, label in labelled:
        by_time_pairs[min(n_times - 1, max(0, int((ts - start) // step)))].append((prediction, label))
    report.quality = ql.summarize([(v, p, y) for _, v, p, y in labelled], ref.classifier)
    per_time_quality: list[Mapping[str, Any]] = [
        ql.quality_metrics(by_time_pairs.get(t, []), ref.classifier) for t in range(n_times)
    ]
    report.over_time = {
        "step": step,
        "times": [start + t * step for t in range(n_times)],
        "rows": [int(v) for v in rows_vt.sum(axis=0)],
        "psi": psi_time,
        "quality": {
            name: [q.get(name) for q in per_time_quality] for name in ql.metric_names(ref.classifier)
        },
        "labelled": [q["labelled"] for q in per_time_quality],
        "estimated": {},
        "estimated_rows": [],
    }
    if ref.classifier and ref.calibrations:
        _estimate(report, store, ref, since, until, start, step, n_times)
    if window.traffic.get(SHADOW):
        report.shadow = sh.summarize_shadow(
            read_shadow(store, since, until), ref.classifier, columns.get(PREDICTION_COLUMN)
        )
    for i, v in enumerate(versions):
        report.versions[v] = {
            "rows": int(rows_vt[i].sum()),
            "share": float(rows_vt[i].sum() / report.rows) if report.rows else 0.0,
            "drifted": version_drifted[v],
            "psi": version_psi[v],
            "fallbacks": int(window.events["fallback"].get(v, 0)),
            "errors": int(window.events["error"].get(v, 0)),
        }
    report.traffic = dict(window.traffic)
    if window.source == "sketches":  # online: every sketched row that no batch wrote
        batch = window.traffic.get("batch", {})
        online = {v: vs["rows"] - batch.get(v, 0) for v, vs in report.versions.items()}
        report.traffic["online"] = {v: n for v, n in online.items() if n > 0}
        report.traffic = {
            k: report.traffic[k] for k in ("online", "batch", "shadow") if report.traffic.get(k)
        }
    if report.rows < MIN_ROWS:
        report.status = "insufficient_data"
    else:
        report.status = "drift" if report.drifted else "ok"
    return report


def _estimate(
    report: MonitorReport,
    store: str,
    ref: Reference,
    since: float | None,
    until: float,
    start: float,
    step: int,
    n_times: int,
) -> None:
    """Fill ``report.estimate`` and ``over_time["estimated"]`` from the logged probabilities."""
    scored = read_scored(store, since, until)
    if not scored:
        return
    by_version: dict[str, list[Any]] = defaultdict(list)
    for row in scored.rows:
        by_version[row.version].append(row)
    chunks: dict[str, list[Any]] = defaultdict(list)
    for chunk in scored.chunks:
        chunks[chunk.version].append(chunk)
    groups: dict[str, est.Group] = {}
    times: dict[str, np.ndarray] = {}  # each row's time, in the group's row order
    for version in sorted(set(by_version) | set(chunks)):
        calibration = ref.calibrations.get(version)
        if calibration is None:  # a version the manifest does not describe: its rows are not estimated
            continue
        rows = by_version.get(version, [])
        blocks = chunks.get(version, [])
        groups[version] = est.Group(
            calibration,
            [r.probabilities for r in rows],
            [r.prediction for r in rows],
            [r.label for r in rows],
            blocks=[est.Block(b.probabilities, b.predictions, b.labels) for b in blocks],
        )
        times[version] = np.concatenate(
            [np.array([r.ts for r in rows], dtype=float)]
            + [np.full(len(b.predictions), b.ts, dtype=float) for b in blocks]
        )
    if not groups:
        return
    section: EstimateSection = {**est.estimate_groups(list(groups.values()))}
    section["by_version"] = {v: est.estimate_groups([g]) for v, g in sorted(groups.items())}
    weights = [
        (g.calibration.reference_accuracy, section["by_version"][v].get("estimated") or 0)
        for v, g in groups.items()
    ]
    known = [(a, w) for a, w in weights if a is not None and w]
    reference = sum(a * w for a, w in known) / sum(w for _, w in known) if known else None
    estimated = section.get("estimated_accuracy")
    section["reference_accuracy"] = reference
    section["estimated_drop"] = None if reference is None or estimated is None else reference - estimated
    report.estimate = section
    # per time bucket: the mean calibrated probability of the answered class (estimated accuracy)
    sums = np.zeros(n_times)
    counts = np.zeros(n_times)
    for version, group in groups.items():
        keep, hits = est.row_hits(group)
        at = times[version][keep]
        t = (
            np.clip(((at - start) // step).astype(np.int64), 0, n_times - 1)
            if len(at)
            else at.astype(np.int64)
        )
        np.add.at(sums, t, hits)
        np.add.at(counts, t, 1)
    report.over_time["estimated"] = {
        "accuracy": [float(sums[i] / counts[i]) if counts[i] else None for i in range(n_times)],
    }
    report.over_time["estimated_rows"] = [int(c) for c in counts]
