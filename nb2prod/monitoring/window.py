"""The store queries of the monitoring report: what a prediction store holds over a time window.

:func:`read_window` opens a prediction store (``serving/store.py``) read-only and reads,
for ``[since, until)``:

* the minute sketches (``sketches`` table), summed later by the report; sketches have
  minute resolution: a minute is in the window when its start is in ``[since, until)``,
  with ``since`` rounded down to its minute. A store with no sketch in the window (a
  service that logs rows but no sketches) is sketched from its ``predictions`` rows
  instead (a scan; :attr:`Window.source` says which);
* the labelled predictions: ``predictions`` joined with ``feedback`` on request id,
  predictions logged in the window;
* the events: invalid inputs by reason and field, fallbacks and errors per model version;
* the traffic: logged rows per source (``online``: the service's monitor, ``batch``:
  ``nb2prod score``, ``shadow``: a challenger scoring off the request path) and version.

Shadow rows (``monitor`` = ``shadow``: the challenger's answers, never returned to anyone)
are left out of every traffic figure; :func:`read_shadow` reads them, paired with the
answered row of the same request id. :func:`read_scored` reads the logged probabilities
for the label-free estimate (``estimate.py``).

:func:`parse_since` reads the window bounds a user types (``2h``, an ISO-8601 time).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from nb2prod.exceptions import MonitorError
from nb2prod.serving import sketch as sk
from nb2prod.serving.store import PREDICTION_COLUMN, Store, event_field, is_sqlite_file

__all__ = [
    "BATCH",
    "BUCKET",
    "ONLINE",
    "SHADOW",
    "Events",
    "InvalidInputs",
    "LabelledPrediction",
    "Scored",
    "ScoredChunk",
    "ScoredRow",
    "ShadowRow",
    "SketchRow",
    "Window",
    "iso",
    "no_events",
    "parse_since",
    "read_scored",
    "read_shadow",
    "read_window",
]

BUCKET = 60
"""Seconds of one sketch bucket (the service writes one sketch per minute, column and writer)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

SHADOW = "shadow"
"""``monitor`` of a challenger's shadow rows (same request id as the answered row)."""
BATCH = "batch"
"""``monitor`` of the rows ``nb2prod score`` logged."""
ONLINE = "online"
"""The traffic source of every other row (the service's own monitor)."""
_NOT_SHADOW = f"monitor <> '{SHADOW}'"

SketchRow = tuple[Any, ...]
"""One stored sketch: ``(bucket, model_version, column, n, encoded counts)`` (rows as the store returns them)."""

LabelledPrediction = tuple[float, str, Any, Any]
"""A prediction with its feedback: ``(ts, model_version, prediction, label)``."""


@dataclass(frozen=True)
class ScoredRow:
    """A logged (not shadow) row for the estimate: time, version, answer, probabilities, label (None: no feedback)."""

    ts: float
    version: str
    prediction: Any
    probabilities: dict[str, Any] | None
    label: Any


@dataclass(frozen=True)
class ScoredChunk:
    """A batch chunk's rows for the estimate, column-wise: time, version, answers, each class's
    probabilities (class -> array), labels (None: no feedback)."""

    ts: float
    version: str
    predictions: Any  # numpy array
    probabilities: dict[str, Any]
    labels: list[Any]


@dataclass(frozen=True)
class Scored:
    """The logged rows with class probabilities of a window: the service's row by row, a batch's
    chunk by chunk (millions of rows stay numpy arrays)."""

    rows: list[ScoredRow]
    chunks: list[ScoredChunk]

    def __bool__(self) -> bool:
        return bool(self.rows or self.chunks)


@dataclass(frozen=True)
class ShadowRow:
    """A challenger's shadow answer beside the champion's answer to the same request (and its label)."""

    request_id: str
    ts: float
    shadow_version: str
    shadow: Any
    answered_version: str | None
    answered: Any
    label: Any


class InvalidInputs(TypedDict):
    """Refused inputs in the window: ``total``, and counts ``by_reason`` and ``by_field`` (most first)."""

    total: int
    by_reason: dict[str, int]
    by_field: dict[str, int]


class Events(TypedDict):
    """The events of the window: ``invalid`` inputs, ``fallback`` and ``error`` counts per model version."""

    invalid: InvalidInputs
    fallback: dict[str, int]
    error: dict[str, int]


@dataclass
class Window:
    """What a prediction store holds over a window.

    Attributes:
        sketches: The sketch rows (stored, or built from logged predictions).
        source: ``"sketches"``, ``"predictions"`` (sketched from logged rows) or ``"none"``.
        labelled: Predictions with their feedback.
        events: Invalid inputs, fallbacks and errors.
        traffic: Logged rows per source (``online``, ``batch``, ``shadow``) and model version.
    """

    sketches: list[SketchRow]
    source: str
    labelled: list[LabelledPrediction]
    events: Events
    traffic: dict[str, dict[str, int]]


def no_events() -> Events:
    """The events of a window without any."""
    return {"invalid": {"total": 0, "by_reason": {}, "by_field": {}}, "fallback": {}, "error": {}}


def iso(ts: float | None) -> str:
    """A unix time as ``YYYY-MM-DD HH:MM:SS UTC`` (``-`` for None)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def read_window(
    store: str, columns: Mapping[str, Mapping[str, Any]], since: float | None, until: float
) -> Window:
    """Sketches, labelled predictions and events of ``store`` over ``[since, until)``.

    Args:
        store: A path, ``sqlite:///path`` or a SQLAlchemy URL; a missing SQLite file reads as
            empty (and is not created).
        columns: Column -> reference profile, to sketch logged rows when no sketch is stored.
        since: Window start (unix seconds); None: from the first record.
        until: Window end, exclusive.

    Raises:
        MonitorError: The store cannot be read.
    """

    def read(handle: Store) -> Window:
        rows = _fetch_sketches(handle, since, until)
        source = "sketches" if rows else "none"
        if not rows:
            rows = _sketch_rows(handle, columns, since, until)
            source = "predictions" if rows else "none"
        return Window(
            rows,
            source,
            _feedback_pairs(handle, since, until),
            _events(handle, since, until),
            _traffic(handle, since, until, source, next(iter(columns), None)),
        )

    result: Window = _read(store, read)
    return result


def _between(column: str, since: float | None, until: float) -> tuple[str, dict[str, Any]]:
    """The SQL condition ``since <= column < until`` (no lower bound without ``since``) and its parameters."""
    params: dict[str, Any] = {"until": until}
    where = f"{column} < :until"
    if since is not None:
        params["since"] = since
        where += f" AND {column} >= :since"
    return where, params


def _fetch_sketches(store: Store, since: float | None, until: float) -> list[SketchRow]:
    # minute resolution: the minute holding ``since`` counts whole
    start = None if since is None else int(since // BUCKET * BUCKET)
    where, params = _between("bucket", start, math.ceil(until))
    return store.query(f"SELECT bucket, model_version, col, n, counts FROM sketches WHERE {where}", params)


def _sketch_rows(
    store: Store, columns: Mapping[str, Mapping[str, Any]], since: float | None, until: float
) -> list[SketchRow]:
    """Sketch rows (bucket, version, column, n, blob) built from logged predictions (no sketches stored)."""
    where, params = _between("ts", since, until)
    rows = store.query(
        f"SELECT ts, model_version, features, prediction FROM predictions WHERE {where} AND {_NOT_SHADOW}",
        params,
    )
    groups: dict[tuple[int, str], list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    for ts, version, features, prediction in rows:
        groups[(int(float(ts) // BUCKET * BUCKET), str(version or ""))].append(
            (json.loads(features), json.loads(prediction).get("prediction"))
        )
    sketchers = {c: sk.Sketcher(p) for c, p in columns.items()}
    out: list[SketchRow] = []
    for (bucket, version), items in groups.items():
        for col, sketcher in sketchers.items():
            if col == PREDICTION_COLUMN:
                values = [pred for _, pred in items]
            else:
                values = [feats.get(col) for feats, _ in items]
            out.append((bucket, version, col, len(items), sk.encode(sketcher(values))))
    return out


def _feedback_pairs(store: Store, since: float | None, until: float) -> list[LabelledPrediction]:
    from nb2prod.batch import rows as batch_rows

    # feedback drives the join (CROSS JOIN fixes SQLite's loop order): labelled rows are few
    where, params = _between("p.ts", since, until)
    rows = store.query(
        "SELECT p.ts, p.model_version, p.prediction, f.label FROM feedback f "
        f"CROSS JOIN predictions p WHERE p.request_id = f.request_id AND {where} AND p.{_NOT_SHADOW}",
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
    for row in batch_rows.labelled(store, since, until):
        label = _loads(row.label)
        if label is not None:
            out.append((row.ts, row.version, row.answer.get("prediction"), label))
    return out


def _events(store: Store, since: float | None, until: float) -> Events:
    where, params = _between("ts", since, until)
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
            by_field[event_field(fld) or ""] += int(count)  # services before this one kept row.x, rows[3].x
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


def _traffic(
    store: Store, since: float | None, until: float, source: str, column: str | None
) -> dict[str, dict[str, int]]:
    """Logged rows per source and model version, without scanning the logged rows where it can.

    With sketches, ``batch`` rows are their sketches' (a batch sketches under writer
    ``batch-<id>-<pid>``, one count per column: ``column``'s is read), and ``online`` is left
    to the report (the sketched rows minus the batch ones). ``shadow`` rows are counted only
    once a shadow was ever switched on (the control key exists). Without sketches the
    logged rows are counted (they were scanned to sketch them anyway).
    """
    out: dict[str, dict[str, int]] = {}

    def add(kind: str, version: Any, count: Any) -> None:
        slot = out.setdefault(kind, {})
        slot[str(version or "")] = slot.get(str(version or ""), 0) + int(count)

    where, params = _between("ts", since, until)
    if source != "sketches":
        for monitor, version, count in store.query(
            f"SELECT monitor, model_version, COUNT(*) FROM predictions WHERE {where} "
            "GROUP BY monitor, model_version",
            params,
        ):
            add(monitor if monitor in (BATCH, SHADOW) else ONLINE, version, count)
        from nb2prod.batch import rows as batch_rows

        for version, count in batch_rows.traffic(store, since, until).items():
            add(BATCH, version, count)
        return out
    if column is not None:
        start = None if since is None else int(since // BUCKET * BUCKET)
        swhere, sparams = _between("bucket", start, math.ceil(until))
        for version, count in store.query(
            f"SELECT model_version, SUM(n) FROM sketches WHERE {swhere} AND col = :col "
            f"AND writer LIKE '{BATCH}-%' GROUP BY model_version",
            {**sparams, "col": column},
        ):
            add(BATCH, version, count)
    if store.query("SELECT name FROM control WHERE name = :n", {"n": SHADOW}):
        for version, count in store.query(
            f"SELECT model_version, COUNT(*) FROM predictions WHERE {where} AND monitor = '{SHADOW}' "
            "GROUP BY model_version",
            params,
        ):
            add(SHADOW, version, count)
    return out


def _open(store: str) -> Store:
    return Store(store, readonly=is_sqlite_file(store))


def _read(store: str, what: Any) -> Any:
    handle = _open(store)
    try:
        return what(handle)
    except MonitorError:
        raise
    except Exception as exc:
        raise MonitorError(
            f"cannot read the prediction store {store}: {type(exc).__name__}: {exc}",
            hint="check the path or URL (NB2PROD_PREDICTION_STORE sets the store nb2prod monitor reads)",
        ) from exc
    finally:
        handle.close()


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def read_scored(store: str, since: float | None, until: float) -> Scored:
    """The answered rows (online and batch, not shadow) of ``[since, until)`` that logged class
    probabilities, with their feedback label where one arrived.

    Raises:
        MonitorError: The store cannot be read.
    """
    where, params = _between("p.ts", since, until)

    def fetch(handle: Store) -> Scored:
        out: list[ScoredRow] = []
        chunks = _batch_scored(handle, since, until)
        # a service that logs no probabilities: one pass in SQL, no row fetched into Python
        probe = handle.query(
            f"SELECT 1 FROM predictions p WHERE {where} AND p.prediction LIKE '%\"probabilities\"%' LIMIT 1",
            params,
        )
        if not probe:
            return Scored(out, chunks)
        rows = handle.query(
            "SELECT p.ts, p.model_version, p.prediction, f.label FROM predictions p "
            f"LEFT JOIN feedback f ON f.request_id = p.request_id WHERE {where} AND p.{_NOT_SHADOW}",
            params,
        )
        for ts, version, prediction, label in rows:
            if "probabilities" not in str(prediction):
                continue
            answer = _loads(prediction)
            if not isinstance(answer, dict) or not isinstance(answer.get("probabilities"), dict):
                continue
            out.append(
                ScoredRow(
                    float(ts),
                    str(version or ""),
                    answer.get("prediction"),
                    answer["probabilities"],
                    _loads(label),
                )
            )
        return Scored(out, chunks)

    scored: Scored = _read(store, fetch)
    return scored


def _batch_scored(store: Store, since: float | None, until: float) -> list[ScoredChunk]:
    """The batch chunks of ``[since, until)`` that logged class probabilities, column-wise."""
    from nb2prod.batch import rows as batch_rows

    out: list[ScoredChunk] = []
    labels: dict[str, dict[int, str]] = {}
    for chunk, table in batch_rows.scan(store, since, until):
        classes = [n for n in table.column_names if n.startswith(batch_rows.PROBABILITY)]
        if not classes:
            continue
        if chunk.batch_id not in labels:
            labels[chunk.batch_id] = batch_rows.batch_labels(store, chunk.batch_id)
        known = labels[chunk.batch_id]
        numbers = table.column(batch_rows.ROW).to_pylist() if known else []
        out.append(
            ScoredChunk(
                chunk.ts,
                chunk.version,
                table.column(batch_rows.PREDICTION).to_numpy(zero_copy_only=False),
                {c[len(batch_rows.PROBABILITY) :]: table.column(c).to_numpy() for c in classes},
                [_loads(known.get(r)) for r in numbers] if known else [None] * table.num_rows,
            )
        )
    return out


def read_shadow(store: str, since: float | None, until: float) -> list[ShadowRow]:
    """The shadow rows of ``[since, until)``, each with the answered row of its request id and its label.

    Raises:
        MonitorError: The store cannot be read.
    """
    where, params = _between("s.ts", since, until)

    def fetch(handle: Store) -> list[ShadowRow]:
        rows = handle.query(
            "SELECT s.request_id, s.ts, s.model_version, s.prediction, p.model_version, p.prediction, f.label "
            "FROM predictions s "
            f"LEFT JOIN predictions p ON p.request_id = s.request_id AND p.{_NOT_SHADOW} "
            "LEFT JOIN feedback f ON f.request_id = s.request_id "
            f"WHERE s.monitor = '{SHADOW}' AND {where} ORDER BY s.ts",
            params,
        )
        out = []
        for rid, ts, sv, sp, av, ap, label in rows:
            shadow, answered = _loads(sp), _loads(ap)
            out.append(
                ShadowRow(
                    request_id=str(rid),
                    ts=float(ts),
                    shadow_version=str(sv or ""),
                    shadow=shadow.get("prediction") if isinstance(shadow, dict) else None,
                    answered_version=None if av is None else str(av),
                    answered=answered.get("prediction") if isinstance(answered, dict) else None,
                    label=_loads(label),
                )
            )
        return out

    rows: list[ShadowRow] = _read(store, fetch)
    return rows
