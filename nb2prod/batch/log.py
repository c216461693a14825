"""Scored rows into the model's prediction store, as source ``batch``, beside the service's traffic.

The service's monitor writes each predicted row (``predictions``) and per-minute drift
sketches per writer (``sketches``); ``nb2prod monitor`` sums the sketches of every writer
and ``nb2prod feedback`` joins labels to rows by request id. A batch writes the same
sketches through the same store API and sketch code (under its own writer id
``batch-<batch id>-<pid>``) and its refused rows as ``invalid`` events (reason and field),
but its rows as one ``batch_chunks`` row a chunk (:mod:`nb2prod.batch.rows`: the chunk's
rows as one Arrow IPC payload, request ids ``<batch id>-<row>`` resolved by range), not one
JSON row each.

A batch's refusals are written as they come, under a kind of their own
(:func:`pending_kind`, ``invalid:<batch id>``, which no reader counts), and become
``invalid`` events only when the batch delivers its output (:func:`deliver`): a batch that
failed or was interrupted refused nothing anyone will act on, and its retry counts its own.

Each chunk is sketched and encoded (numpy sort, Arrow IPC with zstd: both release the GIL)
and written by two background threads while the next chunk is scored (:class:`BatchLog`); at most two
chunks wait in each, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nb2prod.batch import rows as batch_rows
from nb2prod.serving import sketch
from nb2prod.serving.manifest import Manifest
from nb2prod.serving.store import PREDICTION_COLUMN, SQL_UPSERT_SKETCH, Store

__all__ = ["SOURCE", "BatchLog", "deliver", "forget", "pending_kind"]

SOURCE = "batch"
"""The ``monitor`` value of a batch's rows in the ``predictions`` table."""

INVALID = "invalid"
"""The kind of the event that counts a refused row (the service's, and a delivered batch's)."""

# A batch's refusals are looked for from a day before it started: the events_ts index bounds
# the search, with room for the clocks of a cluster's workers.
_CLOCK_MARGIN_S = 86_400.0


def pending_kind(batch_id: str) -> str:
    """The event kind of a batch's refusals until it delivers (``invalid:<batch id>``, 27 characters)."""
    return f"{INVALID}:{batch_id}"


@dataclass
class _Chunk:
    """One scored chunk waiting to be encoded and written."""

    rows: np.ndarray  # the rows' numbers (request ids <batch id>-<row>)
    columns: Mapping[str, tuple[np.ndarray, np.ndarray, str]]
    predictions: np.ndarray
    now: float
    probabilities: Mapping[str, np.ndarray] | None = None


_Work = _Chunk | list[dict[str, Any]] | None
"""What the encoder takes: a chunk, ``invalid`` events, or None (the end)."""


class BatchLog:
    """Writes one batch's rows, sketches and refusals into a prediction store, off the scoring thread.

    Two threads form a pipeline beside the scoring thread: the encoder turns a chunk into its
    ``batch_chunks`` row (an Arrow IPC payload) and folds it into the drift sketches (numpy);
    the writer inserts the row and upserts the sketches. Each queue holds at most two
    chunks, so memory is bounded by the chunk size whatever the input's size. A failed write
    is raised in the scoring thread at its next call, or by :meth:`close`.

    Args:
        location: The store (path or SQLAlchemy URL; :func:`nb2prod.serving.store.prediction_store`).
        manifest: The served contract (which columns are sketched, against which profiles).
        batch_id: Prefix of the request ids.
        version: The model version scoring.
    """

    def __init__(self, location: str, manifest: Manifest, batch_id: str, version: str) -> None:
        self.location = location
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
        rows: np.ndarray,
        columns: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
        predictions: np.ndarray,
        *,
        probabilities: Mapping[str, np.ndarray] | None = None,
        now: float | None = None,
    ) -> None:
        """Queue scored rows: their numbers (ascending), each feature's (values, null mask, kind),
        the predictions and (classifiers) each class's probabilities, read back as the service
        logs them (``{"prediction": ..., "probabilities": {"<class>": p}}``) for the label-free
        quality estimate. The arrays must not be changed afterwards."""
        if self.failure is not None:
            raise self.failure
        if not len(rows):
            return
        self._encode_q.put(
            _Chunk(rows, columns, predictions, time.time() if now is None else now, probabilities)
        )
        self.rows += len(rows)

    def refused(self, reasons: Sequence[Mapping[str, str]], *, now: float | None = None) -> None:
        """Record refused rows (reason and field), as the service does: events of the batch's
        :func:`pending_kind` until :func:`deliver` makes them ``invalid``."""
        if self.failure is not None:
            raise self.failure
        if reasons:
            at = time.time() if now is None else now
            kind = pending_kind(self.batch_id)
            self._encode_q.put(
                [{"kind": kind, "ts": at, "reason": r["reason"], "field": r["field"]} for r in reasons]
            )

    def discard(self) -> None:
        """Stop logging and remove what this process logged for the batch (its chunks, its
        sketches, its refusals): a batch that failed or was interrupted delivered no output, so
        none of its rows is traffic, and no feedback can name them."""
        with contextlib.suppress(BaseException):  # the failure that stopped the batch is being raised
            self.close()
        forget(self.location, self.batch_id, writer=self.writer)

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
        row = batch_rows.chunk_row(
            self.batch_id,
            chunk.rows,
            chunk.columns,
            chunk.predictions,
            chunk.probabilities,
            ts=chunk.now,
            version=self.version,
        )
        sketches = self._sketch(chunk)

        def write() -> None:
            batch_rows.write(self.store, row)
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


def deliver(location: str, batch_id: str, started: float) -> None:
    """Count a batch's refusals as ``invalid`` events: the batch has logged every row and is
    about to deliver its output. ``started``: when the batch started (Unix seconds)."""
    store = Store(location)
    try:
        store.write(
            f"UPDATE events SET kind = '{INVALID}' WHERE ts >= :since AND kind = :pending",
            [{"since": started - _CLOCK_MARGIN_S, "pending": pending_kind(batch_id)}],
        )
    finally:
        store.close()


def forget(location: str, batch_id: str, *, writer: str | None = None) -> None:
    """Delete a batch's logged chunks and sketches (one ``writer``'s, or every writer's of the
    batch) and its undelivered refusals (every writer's)."""
    store = Store(location)
    try:
        store.write("DELETE FROM batch_chunks WHERE batch_id = :b", [{"b": batch_id}])
        store.write("DELETE FROM events WHERE kind = :k", [{"k": pending_kind(batch_id)}])
        if writer is not None:
            store.write("DELETE FROM sketches WHERE writer = :w", [{"w": writer}])
        else:  # batch ids hold no LIKE wildcard
            store.write("DELETE FROM sketches WHERE writer LIKE :w", [{"w": f"{SOURCE}-{batch_id}-%"}])
    finally:
        store.close()


def _sketch_values(values: np.ndarray, null: np.ndarray, kind: str) -> np.ndarray:
    """A column's values for its drift sketch: NaN (numbers) or None (others) where null."""
    if kind in ("float", "int"):
        out = values.astype(np.float64)
        out[null] = np.nan
        return out
    obj = values.astype(object)
    obj[null] = None
    return obj
