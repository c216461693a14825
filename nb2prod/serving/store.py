"""The prediction store of a service: predictions, drift sketches, feedback, events, control.

One store per served model: a SQLite file (WAL mode, many workers share it) by
default, PostgreSQL (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``, through
SQLAlchemy; ``pip install 'nb2prod[postgres]'``) for replicas and teams. The same SQL
text serves both: parameters are named (``:name``, which sqlite3 and SQLAlchemy's
``text()`` both read) and the DDL differs only in three type names. The tables are
versioned and migrated forward on open (``store_schema.py``).

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
``batch_chunks``
    What ``nb2prod score`` logged: one row per scored chunk, its rows as an Arrow IPC stream
    (``nb2prod/batch/rows.py``) with their span of row numbers (request ids
    ``<batch id>-<row>``, resolved by range: :meth:`Store.batch_chunks_of`).
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

import bisect
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .redact import redact_uri
from .store_schema import (
    MIGRATIONS,
    PG_LOCK_KEY,
    SCHEMA_VERSION,
    Execute,
    Migration,
    PredictionStoreError,
    migrate,
    read_version,
    refuse_newer,
)

__all__ = ["SCHEMA_VERSION", "PredictionStoreError", "Store", "prediction_store", "serving_dir"]

PREDICTION_COLUMN = "__prediction__"
STORE_ENV = "NB2PROD_PREDICTION_STORE"
CONTAINERIZED_ENV = "BENTOML_CONTAINERIZED"  # set to true by the Dockerfile of `bentoml containerize`
STORE_DIR = "serving"
STORE_FILE = "predictions.db"
CONTROL_ACTIVE = "active"
CONTROL_CANARY = "canary"
INSTALL_HINT = (
    "pip install 'nb2prod[postgres]' (in a Bento: add psycopg[binary] and sqlalchemy to its packages)"
)
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")
_UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a table that does not exist

SQL_INSERT_PREDICTION = (
    "INSERT INTO predictions (request_id, ts, monitor, model_version, features, prediction) "
    "VALUES (:request_id, :ts, :monitor, :model_version, :features, :prediction)"
)
SQL_INSERT_BATCH_CHUNK = (
    "INSERT INTO batch_chunks (batch_id, first_row, last_row, n_rows, ts, model_version, present, payload) "
    "VALUES (:batch_id, :first_row, :last_row, :n_rows, :ts, :model_version, :present, :payload)"
)
SQL_UPSERT_SKETCH = (
    "INSERT INTO sketches (bucket, model_version, col, writer, n, counts) "
    "VALUES (:bucket, :model_version, :col, :writer, :n, :counts) "
    "ON CONFLICT (bucket, model_version, col, writer) DO UPDATE SET n = excluded.n, counts = excluded.counts"
)
SQL_UPSERT_FEEDBACK = (
    "INSERT INTO feedback (request_id, ts, label, source) VALUES (:request_id, :ts, :label, :source) "
    "ON CONFLICT (request_id) DO NOTHING"  # the first label of a request id is kept
)
SQL_INSERT_EVENT = (
    "INSERT INTO events (ts, kind, model_version, reason, field) "
    "VALUES (:ts, :kind, :model_version, :reason, :field)"
)
SQL_UPSERT_CONTROL = (
    "INSERT INTO control (name, value, updated_at) VALUES (:name, :value, :updated_at) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def serving_dir(bentoml_home: str | Path | None = None) -> Path:
    """The directory a service keeps its local state in (prediction stores, spools), by default.

    ``serving/`` beside the BentoML home (``bentoml_home``, else ``$BENTOML_HOME``, else
    BentoML's ``~/bentoml``): a project's BentoML home is ``.nb2prod/bentoml``, so that is
    ``.nb2prod/serving``. In a container built by ``bentoml containerize``
    (``BENTOML_CONTAINERIZED=true``, ``BENTOML_HOME=/home/bentoml/``) the parent of the home
    is ``/home``, owned by root and not writable by the ``bentoml`` user the service runs
    as: there it is ``serving/`` inside the BentoML home.
    """
    home = (
        Path(bentoml_home or os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser().resolve()
    )
    if os.environ.get(CONTAINERIZED_ENV, "").strip().lower() in ("1", "true", "yes"):
        return home / STORE_DIR
    return home.parent / STORE_DIR


def prediction_store(name: str, bentoml_home: str | Path | None = None) -> str:
    """Where the service of registered model ``name`` logs its predictions: the one default.

    ``$NB2PROD_PREDICTION_STORE`` wins (a SQLAlchemy URL as it is, a path made absolute).
    Else ``NAME/predictions.db`` in :func:`serving_dir` (``.nb2prod/serving/NAME/predictions.db``
    of a project, whether the service was started by ``nb2prod serve`` or by ``bentoml serve``;
    ``$BENTOML_HOME/serving/NAME/predictions.db`` in a container).
    """
    env = os.environ.get(STORE_ENV)
    if env:
        return env if "://" in env else str(Path(env).expanduser().resolve())
    return str(serving_dir(bentoml_home) / name / STORE_FILE)


def is_sqlite_file(location: str) -> bool:
    """A plain path, ``sqlite:///path`` or ``sqlite+pysqlite:///path``: written with sqlite3 directly (WAL)."""
    return location.startswith(_SQLITE_PREFIXES) or "://" not in location


def store_path(location: str) -> Path:
    """A SQLite store location (``sqlite:///abs/path`` or a plain path) as a file path."""
    for prefix in _SQLITE_PREFIXES:
        if location.startswith(prefix):
            return Path(location[len(prefix) :])
    return Path(location)


def _sqlite_execute(conn: sqlite3.Connection) -> Execute:
    def execute(sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sql, dict(params or {})).fetchall()]

    return execute


def connect(
    path: Path, *, readonly: bool = False, migrations: Sequence[Migration] = MIGRATIONS
) -> sqlite3.Connection:
    """A SQLite connection in WAL mode with a busy timeout (many workers share one file).

    Read-write, the store is migrated to the last of ``migrations`` first (under
    ``BEGIN IMMEDIATE``: one opener migrates, the others wait and find it current).
    Read-only opens never migrate; both refuse a store newer than this code.

    Raises:
        PredictionStoreError: the store's schema is newer than ``migrations``.
    """
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        try:
            execute = _sqlite_execute(conn)
            refuse_newer(execute, read_version(execute, "sqlite"), str(path), migrations[-1].version)
        except BaseException:
            conn.close()
            raise
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            _migrate_sqlite(conn, str(path), migrations)
        except BaseException:
            conn.close()
            raise
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _migrate_sqlite(conn: sqlite3.Connection, location: str, migrations: Sequence[Migration]) -> None:
    execute = _sqlite_execute(conn)
    version = read_version(execute, "sqlite")
    if version is not None and version >= migrations[-1].version:
        refuse_newer(execute, version, location, migrations[-1].version)
        return
    conn.execute("BEGIN IMMEDIATE")  # the write lock: a second opener waits here, then finds it current
    try:
        migrate(execute, "sqlite", location, migrations)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


# -- SQLAlchemy (PostgreSQL) ---------------------------------------------------------------

_engines: dict[str, Any] = {}
_migrated: set[tuple[str, int]] = set()
_engines_lock = threading.Lock()


def _engine_url(location: str) -> str:
    """The URL SQLAlchemy is given: PostgreSQL without a driver named means psycopg (3), our extra."""
    for prefix in ("postgres://", "postgresql://"):
        if location.startswith(prefix):
            return "postgresql+psycopg://" + location[len(prefix) :]
    return location


def _engine(location: str) -> Any:
    """The process's engine for ``location`` (created once; no connection is made here).

    Raises:
        PredictionStoreError: not a PostgreSQL URL, or SQLAlchemy or the driver is missing.
    """
    with _engines_lock:
        if location in _engines:
            return _engines[location]
        shown = redact_uri(location)
        try:
            import sqlalchemy as sa
        except ImportError:
            raise PredictionStoreError(
                f"the prediction store {shown} needs SQLAlchemy, which is not installed", hint=INSTALL_HINT
            ) from None
        try:
            url = sa.engine.make_url(_engine_url(location))
        except sa.exc.ArgumentError:
            url = None
        if url is None or url.get_backend_name() != "postgresql":
            raise PredictionStoreError(
                f"unsupported prediction store {shown!r}",
                hint=f"{STORE_ENV} takes a SQLite file path, sqlite:///PATH, or "
                "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE",
            )
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except ImportError as exc:
            raise PredictionStoreError(
                f"the PostgreSQL prediction store {shown} needs the {url.get_driver_name()} driver ({exc})",
                hint=INSTALL_HINT,
            ) from None
        _engines[location] = engine
        return engine


def _ready_engine(location: str, migrations: Sequence[Migration]) -> Any:
    """The engine, with the store migrated to the last of ``migrations`` once per process."""
    engine = _engine(location)
    key = (location, migrations[-1].version)
    if key in _migrated:
        return engine
    import sqlalchemy as sa

    with _engines_lock:
        if key not in _migrated:
            with engine.begin() as conn:
                # held until this transaction ends: concurrent openers (replicas) wait, then find it current
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
                migrate(_sa_execute(conn), "postgresql", redact_uri(location), migrations)
            _migrated.add(key)
    return engine


def _sa_execute(conn: Any) -> Execute:
    import sqlalchemy as sa

    def execute(sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = conn.execute(sa.text(sql), dict(params or {}))
        return [tuple(r) for r in result] if result.returns_rows else []

    return execute


class Store:
    """A handle on one prediction store; thread-safe (one lock around the SQLite connection).

    Args:
        location: A file path, ``sqlite:///path`` or a ``postgresql+psycopg://`` URL.
        readonly: Open an existing SQLite file read-only (a missing file reads as empty); read-only
            handles never migrate (on PostgreSQL they read tables not created yet as empty).
        migrations: The schema this code writes (:data:`store_schema.MIGRATIONS`; tests add steps).

    Raises:
        PredictionStoreError: a URL nb2prod cannot use, or its driver is not installed (raised
            here, before any connection); later, on first use, a store newer than this code.
    """

    def __init__(
        self, location: str, *, readonly: bool = False, migrations: Sequence[Migration] = MIGRATIONS
    ) -> None:
        self.location = location
        self.readonly = readonly
        self.migrations = tuple(migrations)
        self._sqlite = is_sqlite_file(location)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._version_checked = False
        if not self._sqlite:
            _engine(location)

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            path = store_path(self.location)
            if self.readonly and not path.exists():
                return None
            self._conn = connect(path, readonly=self.readonly, migrations=self.migrations)
        return self._conn

    def _sa_engine(self) -> Any:
        if self.readonly:
            engine = _engine(self.location)
            if not self._version_checked:  # once per handle: readers never migrate, but refuse newer
                with engine.connect() as conn:
                    execute = _sa_execute(conn)
                    refuse_newer(
                        execute,
                        read_version(execute, "postgresql"),
                        redact_uri(self.location),
                        self.migrations[-1].version,
                    )
                self._version_checked = True
            return engine
        return _ready_engine(self.location, self.migrations)

    def schema_version(self) -> int | None:
        """The store's schema version (None: a read-only SQLite file that does not exist yet)."""
        if self._sqlite:
            with self._lock:
                conn = self._connection()
                return None if conn is None else read_version(_sqlite_execute(conn), "sqlite")
        with self._sa_engine().connect() as conn:
            return read_version(_sa_execute(conn), "postgresql")

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

        with self._sa_engine().begin() as conn:
            conn.execute(sa.text(sql), [dict(r) for r in rows])

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT (an empty list when a read-only store has no tables yet)."""
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

        with self._sa_engine().connect() as conn:
            try:
                return [tuple(r) for r in conn.execute(sa.text(sql), dict(params or {}))]
            except sa.exc.ProgrammingError as exc:
                if self.readonly and getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE:
                    return []
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- convenience on top of write/query ------------------------------------------------

    def add_feedback(self, labels: Iterable[tuple[str, Any]], *, source: str, ts: float | None = None) -> int:
        """Store ground truth ``(request_id, label)`` pairs (the first label of an id is kept, a later
        one ignored: see ``serving/feedback.py`` for counting them); returns how many were offered."""
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
        """The request ids among ``request_ids`` that have a logged prediction (a service's row, or
        a batch's row ``<batch id>-<row>`` in ``batch_chunks``)."""
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
        found.update(self.batch_chunks_of([rid for rid in request_ids if rid not in found]))
        return found

    def batch_chunks_of(self, request_ids: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """Request id -> (batch id, the chunk's first row, the row) of each id that is a logged batch row.

        Reads the chunks' row spans and ``present`` bitmaps, never their payloads.
        """
        wanted: dict[str, list[tuple[str, int]]] = {}
        for rid in request_ids:
            parsed = split_batch_request_id(rid)
            if parsed is not None:
                wanted.setdefault(parsed[0], []).append((rid, parsed[1]))
        out: dict[str, tuple[str, int, int]] = {}
        for batch_id, items in wanted.items():
            spans = self.query(
                "SELECT first_row, last_row, present FROM batch_chunks WHERE batch_id = :b ORDER BY first_row",
                {"b": batch_id},
            )
            starts = [int(r[0]) for r in spans]
            for rid, row in items:
                at = bisect.bisect_right(starts, row) - 1
                if at < 0:
                    continue
                first, last, present = int(spans[at][0]), int(spans[at][1]), spans[at][2]
                if row <= last and _present(present, row - first):
                    out[rid] = (batch_id, first, row)
        return out


_ROW_OF_REQUEST = re.compile(r"^(?:row|rows\[\d+\])(?:\.|$)")


def event_field(field: str | None) -> str | None:
    """The ``field`` an ``invalid`` event records: the column the refusal names, wherever its
    row sat in the request (``row.x`` and ``rows[3].x`` are ``x``, as a batch names it), so
    refusals count per column; ``rows[3]`` (the row itself) is ``row``, any other field is kept."""
    if field is None:
        return None
    found = _ROW_OF_REQUEST.match(field)
    return field if found is None else field[found.end() :] or "row"


def split_batch_request_id(request_id: str) -> tuple[str, int] | None:
    """(batch id, row) of a batch row's request id ``<batch id>-<row>``; None for any other id
    (``b1-007`` too: a row is written without leading zeros, so one row has one id)."""
    head, sep, tail = str(request_id).rpartition("-")
    if not sep or not head.startswith("b") or not tail.isascii() or not tail.isdigit():
        return None
    if len(tail) > 1 and tail.startswith("0"):
        return None
    return head, int(tail)


def _present(bitmap: bytes | None, offset: int) -> bool:
    """Whether row ``offset`` of a chunk's span was logged (``present``: numpy ``packbits``, big bit order)."""
    if bitmap is None:
        return True
    bitmap = bytes(bitmap)
    index = offset >> 3
    return index < len(bitmap) and bool(bitmap[index] >> (7 - (offset & 7)) & 1)
