"""Scored rows into the model's prediction store, as source ``batch``, beside the service's traffic.

The service's monitor writes each predicted row (``predictions``) and per-minute drift
sketches per writer (``sketches``); ``nb2prod monitor`` sums the sketches of every writer
and ``nb2prod feedback`` joins labels to rows by request id. A batch writes the same
tables through the same store API and sketch code: rows with request id
``<batch id>-<row>`` and ``monitor`` = ``batch``, sketches under its own writer id
(``batch-<batch id>-<pid>``), refused rows as ``invalid`` events (reason and field).

Rows are encoded to JSON column-wise in Arrow (no Python object per cell) and bulk-inserted
by two background threads while the next chunk is scored (:class:`BatchLog`); at most two
chunks wait in each, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nb2prod.serving import sketch
from nb2prod.serving.manifest import Manifest
from nb2prod.serving.store import PREDICTION_COLUMN, SQL_UPSERT_SKETCH, Store

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


@dataclass
class _Chunk:
    """One scored chunk waiting to be encoded and written."""

    request_ids: Any  # Arrow string array (the output's request_id column)
    columns: Mapping[str, tuple[np.ndarray, np.ndarray, str]]
    predictions: np.ndarray
    now: float
    probabilities: Mapping[str, np.ndarray] | None = None


_Work = _Chunk | list[dict[str, Any]] | None
"""What the encoder takes: a chunk, ``invalid`` events, or None (the end)."""


class BatchLog:
    """Writes one batch's rows, sketches and refusals into a prediction store, off the scoring thread.

    Two threads form a pipeline beside the scoring thread: the encoder turns a chunk into JSON
    text (Arrow kernels, which release the GIL) and folds it into the drift sketches (numpy);
    the writer bulk-inserts it (:meth:`Store.insert_predictions`: one prepared statement on
    SQLite, ``COPY`` on PostgreSQL) and upserts the sketches. Each queue holds at most two
    chunks, so memory is bounded by the chunk size whatever the input's size. A failed write
    is raised in the scoring thread at its next call, or by :meth:`close`.

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
        self._encode_q: queue.Queue[_Work] = queue.Queue(maxsize=2)
        self._write_q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=2)
        self._threads = [
            threading.Thread(target=self._encode_loop, name="nb2prod-batch-encode", daemon=True),
            threading.Thread(target=self._write_loop, name="nb2prod-batch-write", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- scoring thread ----------------------------------------------------------------------

    def log(
        self,
        request_ids: Any,
        columns: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
        predictions: np.ndarray,
        *,
        probabilities: Mapping[str, np.ndarray] | None = None,
        now: float | None = None,
    ) -> None:
        """Queue scored rows: their request ids (Arrow strings), each feature's (values, null mask,
        kind), the predictions and (classifiers) each class's probabilities, logged as the
        service logs them (``{"prediction": ..., "probabilities": {"<class>": p}}``) for the
        label-free quality estimate. The arrays must not be changed afterwards."""
        if self.failure is not None:
            raise self.failure
        if not len(request_ids):
            return
        self._encode_q.put(
            _Chunk(request_ids, columns, predictions, time.time() if now is None else now, probabilities)
        )
        self.rows += len(request_ids)

    def refused(self, reasons: Sequence[Mapping[str, str]], *, now: float | None = None) -> None:
        """Record refused rows as ``invalid`` events (reason and field), as the service does."""
        if self.failure is not None:
            raise self.failure
        if reasons:
            at = time.time() if now is None else now
            self._encode_q.put(
                [{"kind": "invalid", "ts": at, "reason": r["reason"], "field": r["field"]} for r in reasons]
            )

    def close(self) -> None:
        """Wait for every queued write; raise the first write that failed."""
        if self._threads[0].is_alive():
            self._encode_q.put(None)
        for thread in self._threads:
            thread.join()
        self.store.close()
        if self.failure is not None:
            raise self.failure

    # -- encoder thread ----------------------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            work = self._encode_q.get()
            if work is None:
                self._write_q.put(None)
                return
            if self.failure is not None:
                continue
            try:
                if isinstance(work, list):
                    self._write_q.put(functools.partial(self.store.add_events, work))
                else:
                    self._write_q.put(self._encode(work))
            except BaseException as exc:  # raised in the scoring thread at its next call or close
                self.failure = exc

    def _encode(self, chunk: _Chunk) -> Callable[[], None]:
        ids = chunk.request_ids.to_pylist()
        features = json_rows(chunk.columns)
        predictions = json_rows({"prediction": _prediction_column(chunk.predictions)})
        if chunk.probabilities:
            no_null = np.zeros(len(chunk.predictions), dtype=bool)
            proba = json_rows({label: (p, no_null, "float") for label, p in chunk.probabilities.items()})
            predictions = [
                f'{row[:-1]}, "probabilities": {p}}}' for row, p in zip(predictions, proba, strict=True)
            ]
        sketches = self._sketch(chunk)
        now, version = chunk.now, self.version

        def write() -> None:
            self.store.insert_predictions(
                ids, features, predictions, ts=now, monitor=SOURCE, model_version=version
            )
            self.store.write(SQL_UPSERT_SKETCH, sketches)

        return write

    def _sketch(self, chunk: _Chunk) -> list[dict[str, Any]]:
        """Fold the chunk into its minute's sketches; the rows to upsert for that minute."""
        bucket = int(chunk.now // 60) * 60
        n = len(chunk.predictions)
        for column, sketcher in self.sketchers.items():
            if column == PREDICTION_COLUMN:
                values: Any = chunk.predictions
            elif column in chunk.columns:
                values, null, kind = chunk.columns[column]
                values = _sketch_values(values, null, kind)
            else:
                continue
            counts = np.asarray(sketcher(values), dtype=np.int64)
            slot = self.acc.setdefault((bucket, column), [0, np.zeros_like(counts)])
            slot[0] += n
            slot[1] = slot[1] + counts
        for key in [k for k in self.acc if k[0] < bucket]:
            del self.acc[key]
        return [
            {
                "bucket": b,
                "model_version": self.version,
                "col": c,
                "writer": self.writer,
                "n": int(count),
                "counts": sketch.encode(vector),
            }
            for (b, c), (count, vector) in self.acc.items()
        ]

    # -- writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            work = self._write_q.get()
            if work is None:
                return
            if self.failure is not None:
                continue
            try:
                work()
            except BaseException as exc:
                self.failure = exc


def _prediction_column(predictions: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
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
