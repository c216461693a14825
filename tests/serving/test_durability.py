"""Nothing answered is lost: graceful stops drain, durable mode survives kill -9, the spool replays.

Real ``nb2prod serve`` processes on 127.0.0.1 with a real burst of 16 keep-alive clients
(bounded in time and count); the prediction store is a SQLite file of the test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject, Service, free_port, start, stop, wait_ready

CAPTURE = TUMOR
CLIENTS = 16


class Burst:
    """16 clients posting one row each over keep-alive connections until stopped (or 30 s)."""

    def __init__(self, service: Service, row: dict[str, Any]) -> None:
        self.port = int(service.url.rsplit(":", 1)[1])
        self.body = json.dumps(row)
        self.answered: list[str] = []
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("POST", "/predict", self.body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                return  # the server stopped (or was killed): this client is done
            with self._lock:
                if resp.status == 200:
                    self.answered.extend(item["request_id"] for item in json.loads(data))
                else:
                    self.failed += 1

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(35)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.answered) >= n, f"only {len(self.answered)} answers in {timeout} s"


def logged_ids(store: Path) -> list[str]:
    conn = sqlite3.connect(str(store), timeout=30)
    try:
        return [str(r[0]) for r in conn.execute("SELECT request_id FROM predictions")]
    finally:
        conn.close()


def launch(project: CapturedProject, store: Path, tmp: Path, log: str, **env: str) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "nb2prod", "serve", TUMOR_MODEL, "--port", str(port)]
    service = start(argv, project.env(NB2PROD_PREDICTION_STORE=str(store), **env), tmp / log, project.home)
    wait_ready(service)
    return service


def kill_hard(service: Service) -> None:
    """``kill -9`` the serve process and every worker (they run in their own sessions)."""
    procs = [psutil.Process(service.proc.pid), *psutil.Process(service.proc.pid).children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    service.proc.wait(timeout=30)
    psutil.wait_procs(procs, timeout=30)


def metric(service: Service, name: str) -> float:
    status, body = service.get("/metrics", timeout=10)
    assert status == 200
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body.decode(), re.M)
    return sum(float(v) for v in found)


def row(project: CapturedProject) -> dict[str, Any]:
    return dict(project.data["expected"]["rows"][0])


def test_a_graceful_stop_mid_burst_loses_no_answered_prediction(
    captured_project: CapturedProject, tmp_path: Path
) -> None:
    store = tmp_path / "predictions.db"
    service = launch(captured_project, store, tmp_path, "graceful.log")
    try:
        with Burst(service, row(captured_project)) as burst:
            burst.wait_for(200)
            service.proc.send_signal(signal.SIGTERM)  # how `nb2prod serve` is stopped
            assert service.proc.wait(timeout=60) == 0
    finally:
        stop(service)
    answered = set(burst.answered)
    missing = answered - set(logged_ids(store))
    assert len(answered) >= 200 and not missing, f"{len(missing)} of {len(answered)} answered rows lost"
    # drained: no spool segment is left behind
    assert list((tmp_path / "predictions.db.spool").glob("*.jsonl")) == []


def test_durable_mode_loses_nothing_on_kill_9(captured_project: CapturedProject, tmp_path: Path) -> None:
    store = tmp_path / "predictions.db"
    service = launch(captured_project, store, tmp_path, "durable.log", NB2PROD_DURABLE="1")
    try:
        with Burst(service, row(captured_project)) as burst:
            burst.wait_for(200)
            kill_hard(service)
            answered = set(burst.answered)
    finally:
        stop(service)
    missing = answered - set(logged_ids(store))  # no restart, no replay: committed before answered
    assert len(answered) >= 200 and not missing, f"{len(missing)} of {len(answered)} answered rows lost"


def test_default_mode_kill_9_is_replayed_from_the_spool_at_restart(
    captured_project: CapturedProject, tmp_path: Path
) -> None:
    from nb2prod.serving.spool import read_segment

    store = tmp_path / "predictions.db"
    spool = tmp_path / "predictions.db.spool"
    service = launch(captured_project, store, tmp_path, "default-kill.log")
    try:
        with Burst(service, row(captured_project)) as burst:
            burst.wait_for(200)
            kill_hard(service)
            answered = set(burst.answered)
    finally:
        stop(service)
    segments = list(spool.glob("*.jsonl"))
    spooled = {str(r["request_id"]) for path in segments for r in read_segment(path)}
    assert segments and answered <= spooled | set(logged_ids(store)), (
        "an answered row is neither stored nor spooled"
    )
    restarted = launch(captured_project, store, tmp_path, "default-restart.log")
    try:
        status, _, _ = restarted.post("/predict", json.dumps(row(captured_project)).encode())
        assert status == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not answered <= set(logged_ids(store)):
            time.sleep(0.2)
        logged = logged_ids(store)
        assert answered <= set(logged), f"{len(answered - set(logged))} answered rows not replayed"
        assert len(logged) == len(set(logged)), "a replayed row was written twice"
        assert not any(path.exists() for path in segments), "the killed worker's segment was not replayed"
    finally:
        stop(restarted)


def test_a_store_outage_is_spooled_and_replayed_without_loss(
    captured_project: CapturedProject, tmp_path: Path
) -> None:
    store = tmp_path / "predictions.db"
    service = launch(captured_project, store, tmp_path, "outage.log")
    try:
        with Burst(service, row(captured_project)) as burst:
            burst.wait_for(50)
            # The store away: an exclusive lock held longer than the store's busy timeout (10 s).
            locker = sqlite3.connect(str(store), timeout=30, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                during = len(burst.answered)
                deadline = time.monotonic() + 20
                degraded = 0.0
                while time.monotonic() < deadline and not degraded:
                    time.sleep(0.5)
                    degraded = metric(service, "nb2prod_monitor_degraded")
                assert degraded == 1, "logging is degraded but /metrics does not say so"
                assert service.get("/readyz")[0] == 200, "/readyz must stay ready while rows are spooled"
                burst.wait_for(during + 50)  # still answering while the store is away
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            burst.wait_for(len(burst.answered) + 50)
        answered = set(burst.answered)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not answered <= set(logged_ids(store)):
            time.sleep(0.2)
        logged = logged_ids(store)
        assert answered <= set(logged), f"{len(answered - set(logged))} of {len(answered)} rows lost"
        assert len(logged) == len(set(logged)), "a row was written twice"
        assert metric(service, "nb2prod_monitor_spooled_total") > 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and metric(service, "nb2prod_monitor_degraded") != 0:
            time.sleep(0.2)
        assert metric(service, "nb2prod_monitor_degraded") == 0
    finally:
        stop(service)
