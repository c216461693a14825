"""The ``bentoml.monitor`` backend: every prediction into the prediction store, off the request path.

BentoML calls :meth:`PredictionStoreMonitor.export_data` inside the request, so it only
appends the rows to the process's write-ahead spool (``spool.py``) and enqueues them on a
bounded queue; a thread (``writer.py``) commits the queue to the store (one transaction
per drained batch). Nothing answered is lost:

* a graceful stop (SIGTERM/SIGINT) answers what is in flight, then drains the queue;
* ``kill -9`` loses nothing in memory that the spool does not hold: the spool segments of
  dead processes are replayed (by request id, never twice) when the service starts;
* while the store cannot be written, rows are held and retried (``nb2prod_monitor_degraded``
  is 1 on ``/metrics``), and replayed from the spool when memory is full;
* durable mode (``$NB2PROD_DURABLE``, or the Bento's ``durable`` serving option): a
  prediction is answered only after its row is committed (group commit), or fsynced to the
  spool while the store is away.

Rows that are neither stored nor spooled (no spool directory could be written) are counted
(``nb2prod_monitor_dropped_total``): nothing is lost silently.

Configured in the service as::

    monitoring={"enabled": True, "type": "_nb2prod_serving.monitor.PredictionStoreMonitor",
                "options": {"store": "/abs/path/predictions.db", "model_version": "1"}}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bentoml._internal.monitoring.base import MON_COLUMN_VAR, MON_DATAS_VAR
from bentoml.monitoring import MonitorBase

from .manifest import Manifest
from .redact import redact_text
from .spool import SHADOW_MONITOR
from .store import Store
from .writer import (  # noqa: F401 (Sketcher, _Writer, drain, writer_for: the service and tests use them here)
    DURABLE_WAIT_S,
    Sketcher,
    _Waiter,
    _Writer,
    drain,
    durable_setting,
    install_drain,
    writer_for,
)

logger = logging.getLogger("nb2prod.serving")


def recent(store: str, window: int) -> list[tuple[str, str]]:
    """The newest ``window`` logged (features, prediction) rows, shadow rows left out (they are
    not traffic); empty when nothing was logged."""
    try:
        return [
            (str(a), str(b))
            for a, b in Store(store, readonly=True).query(
                "SELECT features, prediction FROM predictions WHERE monitor != :shadow ORDER BY seq DESC LIMIT :n",
                {"n": window, "shadow": SHADOW_MONITOR},
            )
        ]
    except Exception as exc:  # a store that cannot be read gives an empty window, and says so once per call
        logger.warning("nb2prod: cannot read the prediction store: %s", redact_text(str(exc)))
        return []


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
        from . import health, metrics

        self.model_version = model_version
        self.store = store or str(Path("predictions.db").resolve())
        typed = Manifest.load(manifest) if manifest else None
        self.durable = durable_setting(typed)
        self.writer = writer_for(
            self.store, queue_size, metrics.dropped, metrics.logged, durable=self.durable, health=health
        )
        if typed is not None:
            self.writer.set_manifest(typed)
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
        # In the request path: append to the spool and enqueue; in durable mode, also wait
        # until the writer committed the rows (or fsynced them while the store is away).
        columns = {name: list(values) for name, values in datas.items()}
        n = min((len(v) for v in columns.values()), default=0)
        ids = columns.get("request_id", [""] * n)
        stamps = columns.get("timestamp", [time.time()] * n)
        versions = columns.get("model_version", [self.model_version] * n)
        features = [c for c in self._features if c in columns]
        predictions = [c for c in self._predictions if c in columns]
        waiter = _Waiter(n) if self.durable else None
        self.writer.put_many(
            [
                (
                    str(ids[i]),
                    float(stamps[i]),
                    self.name,
                    str(versions[i]),
                    {c: columns[c][i] for c in features},
                    {c: columns[c][i] for c in predictions},
                )
                for i in range(n)
            ],
            waiter,
        )
        if waiter is not None and not waiter.wait(DURABLE_WAIT_S):
            logger.error("nb2prod: durable mode: %d rows not committed after %.0f s", n, DURABLE_WAIT_S)


install_drain()
