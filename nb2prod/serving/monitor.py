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
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bentoml._internal.monitoring.base import MON_COLUMN_VAR, MON_DATAS_VAR
from bentoml.monitoring import MonitorBase

from .manifest import Manifest
from .store import PREDICTION_COLUMN, SQL_INSERT_PREDICTION, SQL_UPSERT_SKETCH, Store

logger = logging.getLogger("nb2prod.serving")

INSERT_COLUMNS = ("request_id", "ts", "monitor", "model_version", "features", "prediction")
SKETCH_FLUSH_S = 1.0


def recent(store: str, window: int) -> list[tuple[str, str]]:
    """The newest ``window`` logged (features, prediction) rows; empty when nothing was logged."""
    try:
        return [
            (str(a), str(b))
            for a, b in Store(store, readonly=True).query(
                "SELECT features, prediction FROM predictions ORDER BY seq DESC LIMIT :n", {"n": window}
            )
        ]
    except Exception as exc:  # a store that cannot be read gives an empty window, and says so once per call
        logger.warning("nb2prod: cannot read the prediction store: %s", exc)
        return []


class Sketcher:
    """Per-minute drift sketches of every feature and of the prediction, kept by one writer.

    Counts accumulate in memory per (minute, model version, column); the writer
    rewrites its own rows for the minutes that changed at most once a second. Readers
    (``nb2prod monitor``) add up the rows of all writers.
    """

    def __init__(self, manifest: Manifest | Mapping[str, Any]) -> None:
        from . import sketch

        self._encode = sketch.encode
        columns = Manifest.coerce(manifest).monitored_columns()
        # one prepared sketcher per column (bins and reference points computed once)
        self.columns = {name: sketch.Sketcher(profile) for name, profile in columns.items()}
        self.writer_id = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.acc: dict[tuple[int, str, str], list[Any]] = {}
        self.dirty: set[tuple[int, str, str]] = set()
        self.pending: list[tuple[Any, ...]] = []
        self.last_flush = 0.0

    def add(self, batch: list[tuple[Any, ...]]) -> None:
        """Queue rows (request_id, ts, monitor, version, features, prediction) for the next fold.

        Rows are folded once per flush (about a second of traffic at a time): a sketcher call
        costs ~30-50 us whatever the batch size, so one call per column per second instead of
        one per drained batch keeps the writer's CPU per row small.
        """
        self.pending.extend(batch)

    def pending_work(self) -> bool:
        return bool(self.pending or self.dirty)

    def fold(self) -> None:
        """Fold the queued rows into the per-minute sketches."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        import numpy as np

        groups: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
        for row in batch:
            groups.setdefault((int(row[1] // 60) * 60, str(row[3] or "")), []).append(row)
        for (bucket, version), rows in groups.items():
            for column, sketcher in self.columns.items():
                if column == PREDICTION_COLUMN:
                    values = [r[5].get("prediction") if isinstance(r[5], dict) else None for r in rows]
                else:
                    values = [r[4].get(column) if isinstance(r[4], dict) else None for r in rows]
                counts = np.asarray(sketcher(values), dtype=np.int64)
                key = (bucket, version, column)
                slot = self.acc.get(key)
                if slot is None:
                    self.acc[key] = [len(rows), counts]
                else:
                    slot[0] += len(rows)
                    slot[1] = slot[1] + counts
                self.dirty.add(key)

    def due(self, now: float) -> bool:
        return self.pending_work() and now - self.last_flush >= SKETCH_FLUSH_S

    def flush(self, store: Store, now: float) -> None:
        self.fold()
        rows = [
            {
                "bucket": bucket,
                "model_version": version,
                "col": column,
                "writer": self.writer_id,
                "n": int(self.acc[(bucket, version, column)][0]),
                "counts": self._encode(self.acc[(bucket, version, column)][1]),
            }
            for bucket, version, column in sorted(self.dirty)
        ]
        store.write(SQL_UPSERT_SKETCH, rows)
        self.dirty.clear()
        self.last_flush = now
        # minutes that ended more than two minutes ago will not change again
        for key in [k for k in self.acc if k[0] < now - 180]:
            del self.acc[key]


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
        self.sketcher: Sketcher | None = None
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

    def put_event(self, event: dict[str, Any]) -> None:
        """Queue an event (``kind``: invalid, fallback, error) for the ``events`` table."""
        self.put(("__event__", {**event, "ts": event.get("ts", time.time())}))

    def set_manifest(self, manifest: Manifest | Mapping[str, Any]) -> None:
        """Start sketching features and predictions against this manifest's reference profiles."""
        if self.sketcher is None:
            try:
                self.sketcher = Sketcher(manifest)
            except Exception as exc:  # no sketches, but predictions are still logged
                logger.error("nb2prod: drift sketches are off: %s", exc)

    def _run(self) -> None:
        store = Store(self.store)
        while True:
            try:
                item = self.queue.get(timeout=SKETCH_FLUSH_S)
            except queue.Empty:
                # traffic paused: sketches still pending reach the store within a second
                self._flush_sketches(store)
                continue
            if item is None:
                self._flush_sketches(store)
                break
            # Linger before draining: one transaction per ~0.1 s instead of one per request
            # (a commit per row cost ~1 ms of server CPU per request under load).
            time.sleep(self.linger)
            batch = [item]
            done = False
            while len(batch) < 5000:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.append(more)
            self._write(store, batch, final=done)
            if done:
                break
        store.close()

    def _flush_sketches(self, store: Store) -> None:
        if self.sketcher is None or not self.sketcher.pending_work():
            return
        try:
            self.sketcher.flush(store, time.time())
        except Exception as exc:  # retried with the next flush: the counts stay in memory
            logger.error("nb2prod: writing drift sketches failed: %s", exc)

    def _write(self, store: Store, batch: list[tuple[Any, ...]], *, final: bool = False) -> None:
        events = [row[1] for row in batch if row[0] == "__event__"]
        predictions = [row for row in batch if row[0] != "__event__"]
        if self.sketcher is not None and predictions:
            try:
                self.sketcher.add(predictions)
            except Exception as exc:
                logger.error("nb2prod: drift sketch failed on %d rows: %s", len(predictions), exc)
        rows = [
            dict(zip(INSERT_COLUMNS, (*row[:4], _encode(row[4]), _encode(row[5])), strict=True))
            for row in predictions
        ]
        for attempt in range(5):
            try:
                store.write(SQL_INSERT_PREDICTION, rows)
                if events:
                    store.add_events(events)
                now = time.time()
                if self.sketcher is not None and (final or self.sketcher.due(now)):
                    self.sketcher.flush(store, now)
                self.written += len(rows)
                if self.on_write is not None and rows:
                    self.on_write(len(rows))
                return
            except Exception as exc:  # locked by another worker, server away: retry, then count
                if attempt == 4:
                    logger.error("prediction store write failed (%s): %d rows dropped", exc, len(rows))
                    self.dropped += len(rows)
                    if self.on_drop is not None:
                        self.on_drop(len(rows))
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
        manifest: str = "",
        **_: Any,
    ) -> None:
        super().__init__(name)
        from . import metrics

        self.model_version = model_version
        self.store = store or str(Path("predictions.db").resolve())
        self.writer = writer_for(self.store, queue_size, metrics.dropped, metrics.logged)
        if manifest:
            self.writer.set_manifest(Manifest.load(manifest))
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
        versions = columns.get("model_version", [self.model_version] * n)
        features = [c for c in self._features if c in columns]
        predictions = [c for c in self._predictions if c in columns]
        for i in range(n):
            self.writer.put(
                (
                    str(ids[i]),
                    float(stamps[i]),
                    self.name,
                    str(versions[i]),
                    {c: columns[c][i] for c in features},
                    {c: columns[c][i] for c in predictions},
                )
            )
