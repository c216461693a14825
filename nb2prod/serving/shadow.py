"""Shadow scoring: a challenger version scores the answered rows off the request path.

The service answers with the active version (or its canary) as always; when the control
table's ``shadow`` key names a version the Bento carries (``{"version": V}``, set by
``POST /admin/shadow`` or ``nb2prod promote NAME V --shadow``), every answered row is also
handed, after the answer is computed, to one background thread per worker that scores it
with that version and logs the challenger's answer to the prediction store: same
``request_id`` as the answered row, ``monitor`` = ``shadow``, ``model_version`` = the
challenger. The shadow's answer is never returned to anyone.

Bounded and counted: the hand-over is one ``put_nowait`` per batch on a bounded queue; a
full queue drops the batch's shadow rows, and rows the challenger raised on are not logged
either. Both are counted (``nb2prod_shadow_dropped_total{reason}`` on ``/metrics``,
``shadow`` in ``/metadata``): every answered row that was shadowed has its shadow row in the
store unless it is counted as dropped. A graceful stop scores what is queued before the
prediction writer drains (:func:`.writer.before_drain`).

This module runs inside the service: it imports nothing from nb2prod.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .redact import redact_text
from .spool import SHADOW_MONITOR
from .writer import before_drain, take_queued

logger = logging.getLogger("nb2prod.serving")

SHADOW = SHADOW_MONITOR
"""The control table key, and the ``monitor`` of the challenger's rows."""
QUEUE_BATCHES = 2000
"""Batches waiting for the shadow thread; beyond it their shadow rows are dropped (counted)."""
LINGER_S = 0.05
"""The thread waits this long after a batch arrives, then scores everything queued at once:
one model call per ~50 ms of traffic keeps the challenger's share of the GIL small."""
MAX_ROWS = 5000
"""Rows scored in one model call at most."""
DROP_REASONS = ("queue_full", "challenger_error", "stopped")

# (request_id, ts, row) of each answered row; the row as the API parsed it
ShadowRow = tuple[str, float, Any]
# rows -> (request_id, ts, monitor, version, features, prediction) rows for the prediction log
LogRows = Callable[[list[tuple[Any, ...]]], None]


def _metrics() -> tuple[Any, Any]:
    import bentoml

    scored = bentoml.metrics.Counter(
        name="nb2prod_shadow_scored_total",
        documentation="Answered rows the shadow challenger scored and logged (monitor=shadow)",
        labelnames=["model_version"],
    )
    dropped = bentoml.metrics.Counter(
        name="nb2prod_shadow_dropped_total",
        documentation="Answered rows the shadow challenger did not log: full queue, or the challenger raised",
        labelnames=["reason"],
    )
    for reason in DROP_REASONS:  # on /metrics at 0 from the start, not only after a first drop
        dropped.labels(reason=reason)
    return scored, dropped


class ShadowScorer:
    """One thread scoring the answered rows with the shadow version (see the module doc).

    Args:
        score: ``score(version, features)`` -> the version's predictions (JSON-native), one per row.
        log: Queues finished shadow rows for the prediction store (the writer's ``put_many``).
        features: A submitted row -> its features as logged (column -> value); built in the
            shadow thread, not in the request path. Default: the row is that dict already.
        maxsize: Batches the queue holds.
        counters: ``(scored, dropped)`` Prometheus counters (None: BentoML's, created on first use).
    """

    def __init__(
        self,
        score: Callable[[str, Sequence[dict[str, Any]]], list[Any]],
        log: LogRows,
        *,
        features: Callable[[Any], dict[str, Any]] | None = None,
        maxsize: int = QUEUE_BATCHES,
        linger: float = LINGER_S,
        counters: tuple[Any, Any] | None = None,
    ) -> None:
        self.score = score
        self.log = log
        self.features = features or dict
        self.linger = linger
        self.queue: queue.Queue[tuple[str, list[ShadowRow]] | None] = queue.Queue(maxsize=maxsize)
        self.scored = 0
        self.dropped: dict[str, int] = {}
        if counters is None:
            try:
                counters = _metrics()
            except Exception:  # outside a BentoML worker (or created twice): stats() still counts
                counters = (_NoCounter(), _NoCounter())
        self._counters = counters
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        before_drain(self.close)

    # -- the request path ---------------------------------------------------------------------
    def submit(self, version: str, rows: list[ShadowRow]) -> None:
        """Hand answered rows to the shadow thread (never blocks; a full queue drops and counts)."""
        if not rows:
            return
        if self._closed:
            self._drop("stopped", len(rows))
            return
        if self._thread is None:
            self._start()
        try:
            self.queue.put_nowait((version, rows))
        except queue.Full:
            self._drop("queue_full", len(rows))

    def stats(self, version: str | None) -> dict[str, Any] | None:
        """What ``/metadata`` shows: the shadow version, rows scored and dropped by this worker."""
        if version is None and not self.scored and not self.dropped:
            return None
        return {
            "version": version,
            "scored": self.scored,
            "dropped": dict(self.dropped),
            "queued_batches": self.queue.qsize(),
        }

    # -- the thread ---------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nb2prod-shadow", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            time.sleep(self.linger)
            items, done = take_queued(self.queue, item, MAX_ROWS, lambda queued: len(queued[1]))
            self._score(items)
            if done:
                return

    def _score(self, items: list[tuple[str, list[ShadowRow]]]) -> None:
        by_version: dict[str, list[ShadowRow]] = {}
        for version, submitted in items:
            by_version.setdefault(version, []).extend((r[0], r[1], self.features(r[2])) for r in submitted)
        for version, rows in by_version.items():
            try:
                done = list(zip(rows, self.score(version, [r[2] for r in rows]), strict=True))
            except Exception as exc:
                # the rows of many requests: one at a time, so only those it raises on are dropped
                done, failure = [], f"{type(exc).__name__}: {exc}"
                for row in rows:
                    try:
                        done.append((row, self.score(version, [row[2]])[0]))
                    except Exception as row_exc:  # the challenger's failure never reaches a client
                        failure = f"{type(row_exc).__name__}: {row_exc}"
                if len(done) < len(rows):
                    self._drop("challenger_error", len(rows) - len(done))
                    logger.error(
                        "nb2prod: shadow version %s raised on %d of %d rows: %s",
                        version,
                        len(rows) - len(done),
                        len(rows),
                        redact_text(failure)[:300],
                    )
            if done:
                self.log(
                    [
                        (rid, ts, SHADOW, version, features, {"prediction": prediction})
                        for (rid, ts, features), prediction in done
                    ]
                )
                self.scored += len(done)
                self._count(0, version, len(done))

    def _drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._count(1, reason, n)

    def _count(self, which: int, label: str, n: int) -> None:
        counter = self._counters[which]
        if which == 0:
            counter.labels(model_version=label).inc(n)
        else:
            counter.labels(reason=label).inc(n)

    def close(self, timeout: float = 10.0) -> None:
        """Score what is queued (within ``timeout``), then stop; called before the writer drains."""
        self._closed = True
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)


class _NoCounter:
    def labels(self, **_: str) -> _NoCounter:
        return self

    def inc(self, n: float = 1) -> None:
        return None
