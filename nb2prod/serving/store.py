"""The prediction store of a service: predictions, drift sketches, feedback, events, control.

One store per served model: a SQLite file (WAL mode, many workers share it) by
default, any SQLAlchemy URL (PostgreSQL) at scale. The same SQL text serves both:
parameters are named (``:name``, which sqlite3 and SQLAlchemy's ``text()`` both
read) and the DDL differs only in three type names.

Tables:

``predictions``
    One row per predicted row: request id, time, model version, features and
    prediction as JSON. Joined with ``feedback`` for live quality.
``sketches``
    Drift sketches: per minute ``bucket`` (unix seconds, a multiple of 60), model
    version, column (a feature, or ``__prediction__``) and writer (one per worker
    process), the row count ``n`` and the counts vector laid out by ``sketch.py`` from
    the column's reference profile (``sketch.encode``: sparse index/count pairs when
    shorter, else dense little-endian int64). A writer rewrites
    its own row for the current bucket; readers add the rows up. Drift over a million
    logged rows is then a sum of a few thousand small vectors, not a scan.
``feedback``
    Ground truth per request id (labels arrive late; the newest label wins).
``events``
    What the service refused or worked around: ``invalid`` (the guard's reason and
    field), ``fallback`` (the active model raised; the previous version answered),
    ``error``.
``control``
    The service's switches, read by every worker: ``active`` (model version) and
    ``canary`` (version and percent), each a JSON value with the time it was set.

Where a service logs has one default, :func:`prediction_store`: the service computes it
(plain ``bentoml serve`` included) and ``nb2prod serve`` / ``nb2prod monitor`` call the
same function, so both find the same file.

This module is copied into the Bento with the rest of ``serving/``: it imports
nothing from nb2prod, and only the standard library unless a SQLAlchemy URL is used.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PREDICTION_COLUMN = "__prediction__"
STORE_ENV = "NB2PROD_PREDICTION_STORE"
STORE_DIR = "serving"
STORE_FILE = "predictions.db"
CONTROL_ACTIVE = "active"
CONTROL_CANARY = "canary"

_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    seq {serial},
    request_id VARCHAR(64) NOT NULL,
    ts {real} NOT NULL,
    monitor VARCHAR(200) NOT NULL,
    model_version VARCHAR(64),
    features TEXT NOT NULL,
    prediction TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_request_id ON predictions (request_id);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE TABLE IF NOT EXISTS sketches (
    bucket BIGINT NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    col VARCHAR(200) NOT NULL,
    writer VARCHAR(64) NOT NULL,
    n BIGINT NOT NULL,
    counts {blob} NOT NULL,
    PRIMARY KEY (bucket, model_version, col, writer)
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id VARCHAR(64) PRIMARY KEY,
    ts {real} NOT NULL,
    label TEXT NOT NULL,
    source VARCHAR(200)
);
CREATE TABLE IF NOT EXISTS events (
    seq {serial},
    ts {real} NOT NULL,
    kind VARCHAR(32) NOT NULL,
    model_version VARCHAR(64),
    reason VARCHAR(200),
    field VARCHAR(200)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS control (
    name VARCHAR(64) PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at {real} NOT NULL
);
"""
_TYPES = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "blob": "BLOB"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "blob": "BYTEA"},
}

SQL_INSERT_PREDICTION = (
    "INSERT INTO predictions (request_id, ts, monitor, model_version, features, prediction) "
    "VALUES (:request_id, :ts, :monitor, :model_version, :features, :prediction)"
)
SQL_UPSERT_SKETCH = (
    "INSERT INTO sketches (bucket, model_version, col, writer, n, counts) "
    "VALUES (:bucket, :model_version, :col, :writer, :n, :counts) "
    "ON CONFLICT (bucket, model_version, col, writer) DO UPDATE SET n = excluded.n, counts = excluded.counts"
)
SQL_UPSERT_FEEDBACK = (
    "INSERT INTO feedback (request_id, ts, label, source) VALUES (:request_id, :ts, :label, :source) "
    "ON CONFLICT (request_id) DO UPDATE SET ts = excluded.ts, label = excluded.label, source = excluded.source"
)
SQL_INSERT_EVENT = (
    "INSERT INTO events (ts, kind, model_version, reason, field) "
    "VALUES (:ts, :kind, :model_version, :reason, :field)"
)
SQL_UPSERT_CONTROL = (
    "INSERT INTO control (name, value, updated_at) VALUES (:name, :value, :updated_at) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def prediction_store(name: str, bentoml_home: str | Path | None = None) -> str:
    """Where the service of registered model ``name`` logs its predictions: the one default.

    ``$NB2PROD_PREDICTION_STORE`` wins (a SQLAlchemy URL as it is, a path made absolute).
    Else ``serving/NAME/predictions.db`` beside the BentoML home the Bento is served from
    (``bentoml_home``, else ``$BENTOML_HOME``, else BentoML's ``~/bentoml``): a project's
    BentoML home is ``.nb2prod/bentoml``, so its services log to
    ``.nb2prod/serving/NAME/predictions.db`` whether started by ``nb2prod serve`` or by
    ``bentoml serve``.
    """
    env = os.environ.get(STORE_ENV)
    if env:
        return env if "://" in env else str(Path(env).expanduser().resolve())
    home = Path(bentoml_home or os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    return str(home.expanduser().resolve().parent / STORE_DIR / name / STORE_FILE)


def is_sqlite_file(location: str) -> bool:
    """A plain path or ``sqlite:///path``: written with sqlite3 directly (WAL)."""
    return location.startswith("sqlite:///") or "://" not in location


def store_path(location: str) -> Path:
    """A SQLite store location (``sqlite:///abs/path`` or a plain path) as a file path."""
    if location.startswith("sqlite:///"):
        return Path(location[len("sqlite:///") :])
    return Path(location)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A SQLite connection in WAL mode with a busy timeout (many workers share one file)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_DDL.format(**_TYPES["sqlite"]))
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    with _engines_lock:
        if url not in _engines:
            engine = sa.create_engine(url, pool_pre_ping=True)
            types = _TYPES["postgresql" if engine.dialect.name == "postgresql" else "sqlite"]
            with engine.begin() as conn:
                for statement in _DDL.format(**types).split(";"):
                    if statement.strip():
                        conn.execute(sa.text(statement))
            _engines[url] = engine
        return _engines[url]


class Store:
    """A handle on one prediction store; thread-safe (one lock around the SQLite connection).

    Args:
        location: A file path, ``sqlite:///path`` or a SQLAlchemy URL.
        readonly: Open an existing SQLite file read-only (a missing file reads as empty).
    """

    def __init__(self, location: str, *, readonly: bool = False) -> None:
        self.location = location
        self.readonly = readonly
        self._sqlite = is_sqlite_file(location)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            path = store_path(self.location)
            if self.readonly and not path.exists():
                return None
            self._conn = connect(path, readonly=self.readonly)
        return self._conn

    def write(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run ``sql`` once per row of named parameters, in one transaction."""
        if not rows:
            return
        if self._sqlite:
            with self._lock:
                conn = self._connection()
                assert conn is not None
                with conn:
                    conn.executemany(sql, rows)
            return
        import sqlalchemy as sa

        with _engine(self.location).begin() as conn:
            conn.execute(sa.text(sql), [dict(r) for r in rows])

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT (an empty list when a read-only SQLite store does not exist yet)."""
        if self._sqlite:
            with self._lock:
                conn = self._connection()
                if conn is None:
                    return []
                try:
                    return [tuple(r) for r in conn.execute(sql, dict(params or {})).fetchall()]
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        return []
                    raise
        import sqlalchemy as sa

        with _engine(self.location).connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), dict(params or {}))]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- convenience on top of write/query ------------------------------------------------

    def add_feedback(self, labels: Iterable[tuple[str, Any]], *, source: str, ts: float | None = None) -> int:
        """Store ground truth ``(request_id, label)`` pairs; returns how many."""
        now = time.time() if ts is None else ts
        rows = [
            {"request_id": str(rid), "ts": now, "label": json.dumps(label), "source": source}
            for rid, label in labels
        ]
        self.write(SQL_UPSERT_FEEDBACK, rows)
        return len(rows)

    def add_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Record events: dicts with ``kind`` and optional ``ts``, ``model_version``, ``reason``, ``field``."""
        now = time.time()
        self.write(
            SQL_INSERT_EVENT,
            [
                {
                    "ts": e.get("ts", now),
                    "kind": e["kind"],
                    "model_version": e.get("model_version"),
                    "reason": e.get("reason"),
                    "field": e.get("field"),
                }
                for e in events
            ],
        )

    def set_control(self, name: str, value: Any, *, ts: float | None = None) -> None:
        """Set a switch every worker of the service follows (``active``, ``canary``)."""
        self.write(
            SQL_UPSERT_CONTROL,
            [{"name": name, "value": json.dumps(value), "updated_at": time.time() if ts is None else ts}],
        )

    def control(self) -> dict[str, tuple[Any, float]]:
        """Every switch: name -> (value, time it was set)."""
        return {
            str(name): (json.loads(value), float(at))
            for name, value, at in self.query("SELECT name, value, updated_at FROM control")
        }

    def known_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """The request ids among ``request_ids`` that have a logged prediction."""
        found: set[str] = set()
        for start in range(0, len(request_ids), 500):
            chunk = list(request_ids[start : start + 500])
            params = {f"r{i}": rid for i, rid in enumerate(chunk)}
            marks = ", ".join(f":r{i}" for i in range(len(chunk)))
            found.update(
                str(r[0])
                for r in self.query(
                    f"SELECT DISTINCT request_id FROM predictions WHERE request_id IN ({marks})", params
                )
            )
        return found
