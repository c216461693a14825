"""Scored rows into the model's prediction store, as source ``batch``, beside the service's traffic.

The service's monitor writes each predicted row (``predictions``) and per-minute drift
sketches per writer (``sketches``); ``nb2prod monitor`` sums the sketches of every writer
and ``nb2prod feedback`` joins labels to rows by request id. A batch writes the same
tables through the same store API and sketch code: rows with request id
``<batch id>-<row>`` and ``monitor`` = ``batch``, sketches under its own writer id
(``batch-<batch id>-<pid>``), refused rows as ``invalid`` events (reason and field).

Rows are encoded to JSON column-wise in Arrow (no Python object per cell) and written by a
background thread while the next chunk is scored; at most two chunks wait, so memory stays
bounded by the chunk size.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nb2prod.serving import sketch
from nb2prod.serving.manifest import Manifest
from nb2prod.serving.store import PREDICTION_COLUMN, SQL_INSERT_PREDICTION, SQL_UPSERT_SKETCH, Store

__all__ = ["SOURCE", "BatchLog"]

SOURCE = "batch"
"""The ``monitor`` value of a batch's rows in the ``predictions`` table."""


def json_rows(columns: Mapping[str, tuple[np.ndarray, np.ndarray, str]]) -> list[str]:
    """Each row's features as a JSON object, built column-wise by Arrow.

    Args:
        columns: Column -> (values, null mask, kind); NaN and ±inf are written as null, as the
            service's monitor writes them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces: list[Any] = []
    for i, (name, (values, null, kind)) in enumerate(columns.items()):
        pieces.append(("{" if i == 0 else ", ") + json.dumps(name) + ": ")
        if kind in ("float", "int"):
            numbers = pa.array(values)
            text = pc.cast(numbers, pa.string())
            missing = null | (~np.isfinite(values) if kind == "float" else np.zeros(len(values), dtype=bool))
        elif kind == "bool":
            text = pa.array(np.where(values.astype(bool), "true", "false"))
            missing = null
        else:
            items = values.tolist()
            encoded = {
                v: json.dumps(v if isinstance(v, str | int | float | bool) else str(v))
                for v in set(items)
                if v is not None
            }
            text = pa.array([encoded.get(v, "null") if v is not None else "null" for v in items], pa.string())
            missing = null
        pieces.append(pc.if_else(pa.array(missing, pa.bool_()), "null", text) if missing.any() else text)
    if not pieces:
        return []
    pieces.append("}")
    return list(pc.binary_join_element_wise(*pieces, "").to_pylist())


class BatchLog:
    """Writes one batch's rows, sketches and refusals into a prediction store (in a background thread).

    Args:
        location: The store (path or SQLAlchemy URL; :func:`nb2prod.serving.store.prediction_store`).
        manifest: The served contract (which columns are sketched, against which profiles).
        batch_id: Prefix of the request ids.
        version: The model version scoring.
    """

    def __init__(self, location: str, manifest: Manifest, batch_id: str, version: str) -> None:
        self.store = Store(location)
        self.batch_id = batch_id
        self.version = version
        self.writer = f"{SOURCE}-{batch_id}-{os.getpid()}"[:64]
        self.sketchers = {c: sketch.Sketcher(p) for c, p in manifest.monitored_columns().items()}
        self.acc: dict[tuple[int, str], list[Any]] = {}
        self.rows = 0
        self.failure: BaseException | None = None
        self._queue: queue.Queue[list[tuple[str, list[dict[str, Any]]]] | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._drain, name="nb2prod-batch-log", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            if self.failure is not None:
                continue
            try:
                for sql, rows in work:
                    self.store.write(sql, rows)
            except BaseException as exc:  # raised in the scoring thread at the next chunk or close
                self.failure = exc

    def _put(self, work: list[tuple[str, list[dict[str, Any]]]]) -> None:
        if self.failure is not None:
            raise self.failure
        self._queue.put(work)

    def log(
        self,
        rows: np.ndarray,
        columns: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
        predictions: Sequence[Any],
        *,
        now: float | None = None,
    ) -> None:
        """Log scored rows: their input row numbers, each feature's (values, null mask, kind), predictions."""
        now = time.time() if now is None else now
        if not len(rows):
            return
        lines = json_rows(columns)
        preds = json_rows({"prediction": _prediction_column(predictions)})
        prefix = f"{self.batch_id}-"
        logged = [
            {
                "request_id": prefix + str(r),
                "ts": now,
                "monitor": SOURCE,
                "model_version": self.version,
                "features": line,
                "prediction": pred,
            }
            for r, line, pred in zip(rows.tolist(), lines, preds, strict=True)
        ]
        bucket = int(now // 60) * 60
        for column, sketcher in self.sketchers.items():
            if column == PREDICTION_COLUMN:
                values: Any = predictions
            elif column in columns:
                values, null, kind = columns[column]
                values = _sketch_values(values, null, kind)
            else:
                continue
            counts = np.asarray(sketcher(values), dtype=np.int64)
            slot = self.acc.setdefault((bucket, column), [0, np.zeros_like(counts)])
            slot[0] += len(rows)
            slot[1] = slot[1] + counts
        sketches = [
            {
                "bucket": b,
                "model_version": self.version,
                "col": c,
                "writer": self.writer,
                "n": int(n),
                "counts": sketch.encode(counts),
            }
            for (b, c), (n, counts) in self.acc.items()
            if b == bucket
        ]
        for key in [k for k in self.acc if k[0] < bucket]:
            del self.acc[key]
        self._put([(SQL_INSERT_PREDICTION, logged), (SQL_UPSERT_SKETCH, sketches)])
        self.rows += len(rows)

    def refused(self, reasons: Sequence[Mapping[str, str]], *, now: float | None = None) -> None:
        """Record refused rows as ``invalid`` events (reason and field), as the service does."""
        if reasons:
            at = time.time() if now is None else now
            self.store.add_events(
                [{"kind": "invalid", "ts": at, "reason": r["reason"], "field": r["field"]} for r in reasons]
            )

    def close(self) -> None:
        """Wait for every queued write; raise the first write that failed."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.store.close()
        if self.failure is not None:
            raise self.failure


def _prediction_column(predictions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """Predictions as a (values, null mask, kind) column for :func:`json_rows`."""
    values = np.asarray(predictions)
    kind = {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(values.dtype.kind, "string")
    if kind == "string":
        values = np.asarray(predictions, dtype=object)
    return values, np.zeros(len(values), dtype=bool), kind


def _sketch_values(values: np.ndarray, null: np.ndarray, kind: str) -> np.ndarray:
    """A column's values for its drift sketch: NaN (numbers) or None (others) where null."""
    if kind in ("float", "int"):
        out = values.astype(np.float64)
        out[null] = np.nan
        return out
    obj = values.astype(object)
    obj[null] = None
    return obj
