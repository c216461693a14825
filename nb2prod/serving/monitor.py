"""The ``bentoml.monitor`` backend: every prediction into the prediction store, off the request path.

BentoML calls :meth:`PredictionStoreMonitor.export_data` inside the request, so it
only enqueues (``put_nowait``) on a bounded queue; a daemon thread drains the queue
into SQLite (WAL mode, one transaction per drained batch). A full queue drops the
rows and counts them (``nb2prod_monitor_dropped_total``): nothing is lost silently.

Configured in the service as::

    monitoring={"enabled": True, "type": "_nb2prod_serving.monitor.PredictionStoreMonitor",
                "options": {"store": "/abs/path/predictions.db", "model_version": "1"}}
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bentoml._internal.monitoring.base import MON_COLUMN_VAR, MON_DATAS_VAR
from bentoml.monitoring import MonitorBase

logger = logging.getLogger("nb2prod.serving")

META_COLUMNS = ("request_id", "timestamp")
SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    monitor TEXT NOT NULL,
    model_version TEXT,
    features TEXT NOT NULL,
    prediction TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_request_id ON predictions (request_id);
"""


def is_sqlite_file(store: str) -> bool:
    """A plain path or ``sqlite:///path``: written with sqlite3 directly (WAL)."""
    return store.startswith("sqlite:///") or "://" not in store


def store_path(store: str) -> Path:
    """A SQLite store option (``sqlite:///abs/path`` or a plain path) as a file path."""
    if store.startswith("sqlite:///"):
        return Path(store[len("sqlite:///") :])
    return Path(store)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A SQLite connection in WAL mode with a busy timeout (many workers share one file)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA_SQL)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


INSERT_COLUMNS = ("request_id", "ts", "monitor", "model_version", "features", "prediction")


class _SqliteStore:
    def __init__(self, store: str) -> None:
        self.path = store_path(store)
        self.conn: sqlite3.Connection | None = None

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        if self.conn is None:
            self.conn = connect(self.path)
        with self.conn:
            self.conn.executemany(
                f"INSERT INTO predictions ({', '.join(INSERT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", batch
            )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


_tables: dict[str, Any] = {}


def _sa_table(url: str) -> tuple[Any, Any]:
    """The engine and ``predictions`` table of a SQLAlchemy URL (PostgreSQL at scale)."""
    import sqlalchemy as sa

    if url not in _tables:
        engine = sa.create_engine(url, pool_pre_ping=True)
        meta = sa.MetaData()
        table = sa.Table(
            "predictions",
            meta,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("request_id", sa.String(64), nullable=False, index=True),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("monitor", sa.String(200), nullable=False),
            sa.Column("model_version", sa.String(64)),
            sa.Column("features", sa.Text, nullable=False),
            sa.Column("prediction", sa.Text, nullable=False),
        )
        meta.create_all(engine)
        _tables[url] = (engine, table)
    return _tables[url]


class _SqlAlchemyStore:
    def __init__(self, store: str) -> None:
        self.url = store

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        engine, table = _sa_table(self.url)
        with engine.begin() as conn:
            conn.execute(table.insert(), [dict(zip(INSERT_COLUMNS, row, strict=True)) for row in batch])

    def close(self) -> None:
        return None


def open_store(store: str) -> _SqliteStore | _SqlAlchemyStore:
    return _SqliteStore(store) if is_sqlite_file(store) else _SqlAlchemyStore(store)


def recent(store: str, window: int) -> list[tuple[str, str]]:
    """The newest ``window`` logged (features, prediction) rows; empty when nothing was logged."""
    try:
        if is_sqlite_file(store):
            path = store_path(store)
            if not path.exists():
                return []
            conn = connect(path, readonly=True)
            try:
                cur = conn.execute(
                    "SELECT features, prediction FROM predictions ORDER BY seq DESC LIMIT ?", (window,)
                )
                return [(str(a), str(b)) for a, b in cur.fetchall()]
            finally:
                conn.close()
        import sqlalchemy as sa

        engine, table = _sa_table(store)
        query = sa.select(table.c.features, table.c.prediction).order_by(table.c.seq.desc()).limit(window)
        with engine.connect() as conn:
            return [(str(a), str(b)) for a, b in conn.execute(query)]
    except Exception as exc:  # a store that cannot be read gives an empty window, and says so once per call
        logger.warning("nb2prod: cannot read the prediction store: %s", exc)
        return []


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps({k: _jsonable(v) for k, v in value.items()}, default=str)


class _Writer:
    """One background thread per process draining the queue into the store."""

    def __init__(self, store: str, maxsize: int, on_drop: Any, on_write: Any, linger: float = 0.1) -> None:
        self.store = store
        self.linger = linger
        self.queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=maxsize)
        self.on_drop = on_drop
        self.on_write = on_write
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="nb2prod-monitor-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, row: tuple[Any, ...]) -> None:
        try:
            self.queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)

    def _run(self) -> None:
        conn = open_store(self.store)
        while True:
            item = self.queue.get()
            if item is None:
                break
            # Linger before draining: one transaction per ~0.1 s instead of one per request
            # (a commit per row cost ~1 ms of server CPU per request under load).
            time.sleep(self.linger)
            batch = [item]
            while len(batch) < 5000:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(conn, batch)
                    conn.close()
                    return
                batch.append(more)
            self._write(conn, batch)
        conn.close()

    def _write(self, conn: _SqliteStore | _SqlAlchemyStore, batch: list[tuple[Any, ...]]) -> None:
        batch = [(*row[:4], _encode(row[4]), _encode(row[5])) for row in batch]
        for attempt in range(5):
            try:
                conn.write(batch)
                self.written += len(batch)
                if self.on_write is not None:
                    self.on_write(len(batch))
                return
            except Exception as exc:  # locked by another worker, server away: retry, then count
                if attempt == 4:
                    logger.error("prediction store write failed (%s): %d rows dropped", exc, len(batch))
                    self.dropped += len(batch)
                    if self.on_drop is not None:
                        self.on_drop(len(batch))
                    return
                time.sleep(0.05 * (attempt + 1))

    def close(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def writer_for(store: str, maxsize: int = 100_000, on_drop: Any = None, on_write: Any = None) -> _Writer:
    key = f"{os.getpid()}:{store}"
    with _writers_lock:
        if key not in _writers:
            _writers[key] = _Writer(store, maxsize, on_drop, on_write)
        return _writers[key]


class PredictionStoreMonitor(MonitorBase[Any]):
    """A ``MonitorBase`` that writes each logged record to the prediction store.

    Columns logged with role ``feature`` become the row's features, role ``prediction``
    its prediction; ``request_id`` and ``timestamp`` are meta columns.
    """

    def __init__(
        self,
        name: str,
        store: str = "",
        model_version: str = "",
        queue_size: int = 100_000,
        **_: Any,
    ) -> None:
        super().__init__(name)
        from . import metrics

        self.model_version = model_version
        self.store = store or str(Path("predictions.db").resolve())
        self.writer = writer_for(self.store, queue_size, metrics.dropped, metrics.logged)
        self._features: list[str] = []
        self._predictions: list[str] = []

    def log(self, data: Any, name: str, role: str, data_type: str) -> None:
        self.log_batch([data], name, role, data_type)

    def log_batch(self, data_batch: Iterable[Any], name: str, role: str, data_type: str) -> None:
        # One call per column and batch (BentoML's log_batch calls log() per value, and log()
        # warns on roles it does not know; request_id and timestamp are ours).
        if self.columns_schema is None:
            columns = MON_COLUMN_VAR.get()
            if columns is not None and name not in columns:
                columns[name] = {"name": name, "role": role, "type": data_type}
        datas = MON_DATAS_VAR.get()
        if datas is not None:
            datas[name].extend(data_batch)

    def export_schema(self, columns_schema: Mapping[str, Mapping[str, str]]) -> None:
        self._features = [c for c, spec in columns_schema.items() if spec.get("role") == "feature"]
        self._predictions = [c for c, spec in columns_schema.items() if spec.get("role") == "prediction"]

    def export_data(self, datas: Mapping[str, Iterable[Any]]) -> None:
        # In the request path: only enqueue. JSON encoding happens in the writer thread.
        columns = {name: list(values) for name, values in datas.items()}
        n = min((len(v) for v in columns.values()), default=0)
        ids = columns.get("request_id", [""] * n)
        stamps = columns.get("timestamp", [time.time()] * n)
        features = [c for c in self._features if c in columns]
        predictions = [c for c in self._predictions if c in columns]
        for i in range(n):
            self.writer.put(
                (
                    str(ids[i]),
                    float(stamps[i]),
                    self.name,
                    self.model_version,
                    {c: columns[c][i] for c in features},
                    {c: columns[c][i] for c in predictions},
                )
            )
