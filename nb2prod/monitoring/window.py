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
* the events: invalid inputs by reason and field, fallbacks and errors per model version.

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
from nb2prod.serving.store import PREDICTION_COLUMN, Store, is_sqlite_file

__all__ = [
    "BUCKET",
    "Events",
    "InvalidInputs",
    "LabelledPrediction",
    "SketchRow",
    "Window",
    "iso",
    "no_events",
    "parse_since",
    "read_window",
]

BUCKET = 60
"""Seconds of one sketch bucket (the service writes one sketch per minute, column and writer)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

SketchRow = tuple[Any, ...]
"""One stored sketch: ``(bucket, model_version, column, n, encoded counts)`` (rows as the store returns them)."""

LabelledPrediction = tuple[float, str, Any, Any]
"""A prediction with its feedback: ``(ts, model_version, prediction, label)``."""


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
    """

    sketches: list[SketchRow]
    source: str
    labelled: list[LabelledPrediction]
    events: Events


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
    handle = Store(store, readonly=is_sqlite_file(store))
    try:
        rows = _fetch_sketches(handle, since, until)
        source = "sketches" if rows else "none"
        if not rows:
            rows = _sketch_rows(handle, columns, since, until)
            source = "predictions" if rows else "none"
        return Window(rows, source, _feedback_pairs(handle, since, until), _events(handle, since, until))
    except MonitorError:
        raise
    except Exception as exc:
        raise MonitorError(
            f"cannot read the prediction store {store}: {type(exc).__name__}: {exc}",
            hint="check the path or URL (NB2PROD_PREDICTION_STORE sets the store nb2prod monitor reads)",
        ) from exc
    finally:
        handle.close()


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
        f"SELECT ts, model_version, features, prediction FROM predictions WHERE {where}", params
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
    # feedback drives the join (CROSS JOIN fixes SQLite's loop order): labelled rows are few
    where, params = _between("p.ts", since, until)
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
