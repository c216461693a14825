"""The monitor's writer: one thread per process committing prediction rows to the store.

Rows come from :class:`~.monitor.PredictionStoreMonitor` (in the request path: appended to
the write-ahead spool, then queued) and events from the service. The thread commits
batches (one transaction each), keeps per-minute drift sketches, holds what the store
refuses (a store outage) and retries it, and replays the spool segments of dead
processes. Durable mode: the request waits until its rows are committed (group commit).
A graceful stop drains the queue (:func:`install_drain`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic_core

from .manifest import Manifest
from .redact import redact_text
from .spool import FSYNC_S, SHADOW_MONITOR, Spool, missing_rows, replay, spool_dir
from .store import PREDICTION_COLUMN, SQL_INSERT_PREDICTION, SQL_UPSERT_SKETCH, Store

logger = logging.getLogger("nb2prod.serving")

INSERT_COLUMNS = ("request_id", "ts", "monitor", "model_version", "features", "prediction")
SKETCH_FLUSH_S = 1.0
RETRY_S = 0.2  # how often a store that refused a write is tried again
REPLAY_S = 5.0  # how often spool segments of dead processes (and sealed ones) are looked for
DURABLE_ENV = "NB2PROD_DURABLE"
DURABLE_WAIT_S = 10.0  # the longest a durable-mode request waits for its commit


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


def _scalar(value: Any) -> Any:
    """A value JSON cannot take as it is: numpy scalars as Python ones, anything else as text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _encode(value: Any) -> str:
    """A row's features or prediction as the JSON text stored: NaN and ±inf as null.

    pydantic-core's encoder (~4x json.dumps on 30 features): this runs in the request path.
    """
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, inf_nan_mode="null", fallback=_scalar).decode()


class _Waiter:
    """A durable-mode request waiting for its ``n`` rows to be committed (or fsynced to the spool)."""

    __slots__ = ("_event", "_left", "_lock")

    def __init__(self, n: int) -> None:
        self._left = n
        self._lock = threading.Lock()
        self._event = threading.Event()
        if n <= 0:
            self._event.set()

    def done(self, n: int = 1) -> None:
        with self._lock:
            self._left -= n
            if self._left <= 0:
                self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


# A queued prediction: the row (request_id, ts, monitor, version, features, prediction), its
# INSERT parameters and its durable-mode waiter. An event is ("__event__", dict).
_Item = tuple[Any, ...]


class _Writer:
    """One background thread per process draining the queue into the store (see the module doc).

    Every prediction is appended to the process's spool segment before it is queued; the
    thread commits batches to the store. When the store cannot be written, batches wait in
    ``backlog`` (memory, bounded by ``maxsize``; beyond it, only in the spool) and are
    retried every :data:`RETRY_S`; ``degraded`` says so. With ``durable``, the thread
    commits whatever is queued at once (group commit) and releases the waiting requests.
    """

    def __init__(
        self,
        store: str,
        maxsize: int,
        on_drop: Any,
        on_write: Any,
        linger: float = 0.1,
        *,
        durable: bool = False,
        health: Any = None,
    ) -> None:
        self.store = store
        self.linger = linger
        self.maxsize = maxsize
        self.durable = durable
        self.health = health
        self.queue: queue.Queue[_Item | None] = queue.Queue(maxsize=maxsize)
        self.on_drop = on_drop
        self.on_write = on_write
        self.dropped = 0  # rows neither in the store nor in the spool: lost, and counted
        self.written = 0
        self.spooled = 0  # rows the store could not take when first written (held, then retried)
        self.replayed = 0  # rows recovered from spool segments into the store
        self.degraded = False
        self.backlog: list[_Item] = []
        self.event_backlog: list[dict[str, Any]] = []
        self.sketcher: Sketcher | None = None
        self.spool: Spool | None = None
        try:
            self.spool = Spool(spool_dir(store))
        except OSError as exc:  # logged rows still reach the store; a crash or outage may lose some
            logger.error(
                "nb2prod: no write-ahead spool (%s): rows in flight are lost on a crash",
                redact_text(str(exc)),
            )
        self._last_sync = self._last_replay = 0.0
        self._thread = threading.Thread(target=self._run, name="nb2prod-monitor-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def configure(
        self, on_drop: Any = None, on_write: Any = None, durable: bool | None = None, health: Any = None
    ) -> None:
        """Set what the first caller of :func:`writer_for` did not know (callbacks, mode)."""
        self.on_drop = on_drop or self.on_drop
        self.on_write = on_write or self.on_write
        self.health = health or self.health
        if durable is not None:
            self.durable = durable

    def put(self, row: tuple[Any, ...], waiter: _Waiter | None = None) -> None:
        """Queue a prediction row (request_id, ts, monitor, version, features, prediction)."""
        self.put_many([row], waiter)

    def put_many(self, rows: Sequence[tuple[Any, ...]], waiter: _Waiter | None = None) -> None:
        """Queue the prediction rows of one batch: one spool write for all of them, then the queue."""
        encoded = [
            dict(zip(INSERT_COLUMNS, (*row[:4], _encode(row[4]), _encode(row[5])), strict=True))
            for row in rows
        ]
        if self.spool is not None and encoded:
            try:
                self.spool.append(encoded)
            except (OSError, ValueError) as exc:  # disk full, or the writer already stopped
                logger.error("nb2prod: the spool cannot be written: %s", redact_text(str(exc)))
        for row, enc in zip(rows, encoded, strict=True):
            try:
                self.queue.put_nowait((*row, enc, waiter))
            except queue.Full:
                self._lost_in_memory(1)
                if waiter is not None:
                    self._release([(*row, enc, waiter)], synced=False)

    def _lost_in_memory(self, n: int) -> None:
        """``n`` rows left memory unwritten: the spool replays them later, else they are dropped."""
        if self.spool is not None:
            self.spool.settle(n, lost=True)
            return
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    def put_event(self, event: dict[str, Any]) -> None:
        """Queue an event (``kind``: invalid, fallback, error) for the ``events`` table."""
        try:
            self.queue.put_nowait(("__event__", {**event, "ts": event.get("ts", time.time())}))
        except queue.Full:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)

    def set_manifest(self, manifest: Manifest | Mapping[str, Any]) -> None:
        """Start sketching features and predictions against this manifest's reference profiles."""
        if self.sketcher is None:
            try:
                self.sketcher = Sketcher(manifest)
            except Exception as exc:  # no sketches, but predictions are still logged
                logger.error("nb2prod: drift sketches are off: %s", redact_text(str(exc)))

    def _run(self) -> None:
        store = Store(self.store)
        self._replay(store)
        while True:
            try:
                item = self.queue.get(timeout=RETRY_S if self.backlog else SKETCH_FLUSH_S)
            except queue.Empty:
                self._housekeeping(store)
                continue
            if item is None:
                self._write(store, [], final=True)
                break
            # Linger before draining: one transaction per ~0.1 s instead of one per request
            # (a commit per row cost ~1 ms of server CPU per request under load). Durable mode
            # does not linger: the requests wait, and whatever queued meanwhile is one commit.
            if not self.durable:
                time.sleep(self.linger)
            batch, done = take_queued(self.queue, item, 5000)
            self._write(store, batch, final=done)
            if done:
                break
            self._housekeeping(store)
        if self.spool is not None:
            self.spool.close()
        store.close()

    def _housekeeping(self, store: Store) -> None:
        now = time.time()
        if self.backlog or self.event_backlog:
            self._write(store, [])
        self._flush_sketches(store)
        if self.spool is not None:
            if self.spool.dirty and now - self._last_sync >= FSYNC_S:
                self._last_sync = now
                self.spool.sync()
            if not self.degraded:
                self.spool.rotate_if_done(force=bool(self.spool.unsettled_lost))
                if now - self._last_replay >= REPLAY_S:
                    self._replay(store)

    def _replay(self, store: Store) -> None:
        """Replay the spool segments of dead processes (and sealed ones) into the store."""
        self._last_replay = time.time()
        if self.spool is None:
            return
        try:
            n = replay(self.spool.directory, store, skip=self.spool.path, on_rows=self._sketch_replayed)
        except Exception as exc:  # the store away: the segments stay, retried later
            self._set_degraded(True, exc)
            return
        if n:
            self.replayed += n
            if self.health is not None:
                self.health.replayed(n)
            if self.on_write is not None:
                self.on_write(n)

    def _sketch_replayed(self, rows: list[dict[str, Any]]) -> None:
        if self.sketcher is None:
            return
        try:
            self.sketcher.add(
                [
                    (r["request_id"], float(r["ts"]), r["monitor"], r["model_version"],
                     json.loads(r["features"]), json.loads(r["prediction"]))
                    for r in rows
                    if r["monitor"] != SHADOW_MONITOR
                ]
            )  # fmt: skip
        except Exception as exc:
            logger.error(
                "nb2prod: drift sketch failed on %d replayed rows: %s", len(rows), redact_text(str(exc))
            )

    def _flush_sketches(self, store: Store) -> None:
        if self.sketcher is None or not self.sketcher.pending_work():
            return
        if not self.sketcher.due(time.time()):
            return
        try:
            self.sketcher.flush(store, time.time())
        except Exception as exc:  # retried with the next flush: the counts stay in memory
            logger.error("nb2prod: writing drift sketches failed: %s", redact_text(str(exc)))

    def _set_degraded(self, on: bool, exc: BaseException | None = None) -> None:
        if on and not self.degraded:
            logger.error("nb2prod: the prediction store cannot be written (%s): rows are spooled to %s",
                         redact_text(str(exc)), self.spool.directory if self.spool else "memory only")  # fmt: skip
        elif not on and self.degraded:
            logger.warning("nb2prod: the prediction store is back: spooled rows are being written")
        self.degraded = on
        if self.health is not None:
            self.health.degraded(on)

    def _release(self, items: list[_Item], *, synced: bool) -> None:
        """Answer the durable-mode requests of ``items`` (their rows are committed or fsynced)."""
        waiters = [it[7] for it in items if it[7] is not None]
        if not waiters:
            return
        if not synced and self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.sync()
        for w in waiters:
            w.done()

    def _write(self, store: Store, batch: list[_Item], *, final: bool = False) -> None:
        events = [row[1] for row in batch if row[0] == "__event__"]
        predictions = [row for row in batch if row[0] != "__event__"]
        # the drift sketches are of traffic: a shadow challenger's rows are not traffic
        sketched = [row for row in predictions if row[2] != SHADOW_MONITOR]
        if self.sketcher is not None and sketched:
            try:
                self.sketcher.add(sketched)
            except Exception as exc:
                logger.error(
                    "nb2prod: drift sketch failed on %d rows: %s", len(predictions), redact_text(str(exc))
                )
        attempts = 5 if final else 1
        for attempt in range(attempts):
            if self._commit(store, predictions):
                break
            if attempt + 1 < attempts:
                time.sleep(RETRY_S)
        self.event_backlog.extend(events)
        if self.event_backlog and not self.degraded:
            try:
                store.add_events(self.event_backlog)
                self.event_backlog = []
            except Exception as exc:  # kept (bounded) for the next write
                logger.error("nb2prod: writing events failed: %s", redact_text(str(exc)))
                del self.event_backlog[: max(0, len(self.event_backlog) - self.maxsize)]
        if self.sketcher is not None and not self.degraded and (final or self.sketcher.due(time.time())):
            try:
                self.sketcher.flush(store, time.time())
            except Exception as exc:
                logger.error("nb2prod: writing drift sketches failed: %s", redact_text(str(exc)))

    def _commit(self, store: Store, predictions: list[_Item]) -> bool:
        """Write the backlog, then ``predictions``; what the store refuses joins the backlog."""
        if self.backlog:
            backlog = self.backlog
            try:
                # The outcome of the failed write is unknown (a lost connection after COMMIT):
                # only the rows the store lacks, by request id, are written again.
                rows = missing_rows(store, [it[6] for it in backlog])
                store.write(SQL_INSERT_PREDICTION, rows)
            except Exception as exc:
                self._hold(predictions, exc)
                return False
            self.backlog = []
            self._committed(backlog, len(rows))
            self._set_degraded(False)
        if not predictions:
            return True
        try:
            store.write(SQL_INSERT_PREDICTION, [it[6] for it in predictions])
        except Exception as exc:  # locked by another worker, server away: held and retried
            self._hold(predictions, exc)
            return False
        self._committed(predictions, len(predictions))
        return True

    def _committed(self, items: list[_Item], inserted: int) -> None:
        self.written += inserted
        if self.spool is not None:
            self.spool.settle(len(items))
        if self.on_write is not None and inserted:
            self.on_write(inserted)
        self._release(items, synced=True)

    def _hold(self, predictions: list[_Item], exc: BaseException) -> None:
        self._set_degraded(True, exc)
        if predictions:
            self.spooled += len(predictions)
            if self.health is not None:
                self.health.spooled(len(predictions))
        self.backlog.extend(predictions)
        overflow = len(self.backlog) - self.maxsize
        if overflow > 0:  # memory is bounded: the oldest rows stay only in the spool
            self._lost_in_memory(overflow)
            self._release(self.backlog[:overflow], synced=False)
            del self.backlog[:overflow]
        self._release(predictions, synced=False)
        # released once: a held row's waiter is not waited on again
        self.backlog = [(*it[:7], None) for it in self.backlog]

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (retrying a few times) and stop; what stays unwritten is in the spool."""
        if not self._thread.is_alive():
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def writer_for(
    store: str,
    maxsize: int = 100_000,
    on_drop: Any = None,
    on_write: Any = None,
    *,
    durable: bool | None = None,
    health: Any = None,
) -> _Writer:
    key = f"{os.getpid()}:{store}"
    with _writers_lock:
        if key not in _writers:
            _writers[key] = _Writer(store, maxsize, on_drop, on_write, durable=bool(durable), health=health)
        else:
            _writers[key].configure(on_drop, on_write, durable, health)
        return _writers[key]


_before_drain: list[Any] = []


def take_queued(
    source: queue.Queue[Any], first: Any, limit: int, size: Callable[[Any], int] = lambda _: 1
) -> tuple[list[Any], bool]:
    """``first`` and what else is queued now, up to ``limit`` (counted by ``size``), without
    waiting; and whether the end marker (None) came (it is not returned)."""
    items, total = [first], size(first)
    while total < limit:
        try:
            more = source.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return items, True
        items.append(more)
        total += size(more)
    return items, False


def before_drain(hook: Any) -> None:
    """Call ``hook(timeout)`` at the start of every :func:`drain` (the shadow thread queues rows
    for the writers: it finishes first)."""
    _before_drain.append(hook)


def drain(timeout: float = 10.0) -> None:
    """Write every queued row of this process's writers to the store, then stop them.

    Called on a graceful stop (see :func:`install_drain`), after the server answered what
    was in flight; a ``bentoml.on_shutdown`` hook of the service may call it too.
    """
    for hook in list(_before_drain):
        try:
            hook(timeout)
        except Exception as exc:  # the writers still drain
            logger.error("nb2prod: a drain hook failed: %s", redact_text(str(exc)))
    with _writers_lock:
        writers = [w for k, w in _writers.items() if k.startswith(f"{os.getpid()}:")]
    for writer in writers:
        writer.close(timeout)


def durable_setting(manifest: Manifest | None) -> bool:
    """Durable mode: ``$NB2PROD_DURABLE`` (1/true/yes, 0/false/no) wins over the Bento's setting."""
    env = os.environ.get(DURABLE_ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    return bool(manifest is not None and manifest.serving.durable)


def install_drain() -> None:
    """Drain the writers on SIGTERM/SIGINT before the process dies (main thread only).

    uvicorn (BentoML's worker) handles both signals while it serves: it stops accepting,
    answers what is in flight, runs the lifespan shutdown, then restores the handlers it
    found and raises the signal again; with the default handler the process would die
    there without running ``atexit``, and the rows still queued would be lost. This handler,
    installed at import (before uvicorn starts), drains first, then does what the previous
    handler would have done.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if getattr(previous, "_nb2prod_drain", False):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            drain()
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        handler._nb2prod_drain = True  # type: ignore[attr-defined]
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):  # not allowed here (an embedded interpreter)
            return
