"""The exported service logging into a real PostgreSQL server: served = logged.

``nb2prod serve tumor`` (the shared ``TUMOR`` capture) with
``NB2PROD_PREDICTION_STORE=postgresql+psycopg://...`` on a fresh database (tests/pg.py):
every answered row is in PostgreSQL exactly once with what was served, and the sketches,
events, feedback and control rows land there too; ``nb2prod monitor`` reads them back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject, Service, free_port, serving

pytestmark = pytest.mark.slow

CAPTURE = TUMOR
MODEL = TUMOR_MODEL
TOKEN = "pg-test-admin-token"


@pytest.fixture(scope="module")
def pg_service(captured_project: CapturedProject, pg_url: str) -> Iterator[Service]:
    port = free_port()
    argv = [sys.executable, "-m", "nb2prod", "serve", MODEL, "--port", str(port)]
    env = captured_project.env(NB2PROD_PREDICTION_STORE=pg_url, NB2PROD_ADMIN_TOKEN=TOKEN)
    with serving(argv, env, captured_project.home / "serve-postgres.log", cwd=captured_project.home) as srv:
        yield srv


def _rows(pg_url: str, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    import psycopg

    from tests.pg import libpq_url

    with psycopg.connect(libpq_url(pg_url)) as conn:
        return list(conn.execute(sql, params or {}).fetchall())


def _wait(
    pg_url: str, sql: str, params: dict[str, Any], until: Any, timeout: float = 30
) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(pg_url, sql, params)
        if until(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_served_equals_logged_in_postgresql(
    captured_project: CapturedProject, pg_service: Service, pg_url: str
) -> None:
    rows = captured_project.data["expected"]["rows"]
    ids = [f"pg-{uuid.uuid4().hex[:12]}-{i}" for i in range(200)]

    def call(i: int) -> tuple[int, Any]:
        body = json.dumps(rows[i % len(rows)]).encode()
        status, raw, _ = pg_service.post("/predict", body, headers={"X-Request-ID": ids[i]})
        return status, json.loads(raw)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(call, range(len(ids))))
    assert [status for status, _ in answers] == [200] * len(ids)
    served = {a[0]["request_id"]: (a[0]["prediction"], a[0]["model_version"]) for _, a in answers}
    assert sorted(served) == sorted(ids)

    logged = _wait(
        pg_url,
        "SELECT request_id, prediction, model_version FROM predictions WHERE request_id LIKE 'pg-%%'",
        {},
        lambda r: len(r) >= len(ids),
    )
    assert sorted(r[0] for r in logged) == sorted(ids)  # each answered row once, none lost
    assert {r[0]: (json.loads(r[1])["prediction"], r[2]) for r in logged} == served
    sketched = _wait(
        pg_url,
        "SELECT COALESCE(SUM(n), 0) FROM sketches WHERE col = '__prediction__'",
        {},
        lambda r: r[0][0] >= len(ids),
    )
    assert sketched[0][0] == len(ids)
    assert "nb2prod_monitor_dropped_total 0.0" in pg_service.get("/metrics")[1].decode()


def test_events_feedback_and_control_reach_postgresql(
    captured_project: CapturedProject, pg_service: Service, pg_url: str
) -> None:
    row = dict(captured_project.data["expected"]["rows"][0])
    rid = f"fb-{uuid.uuid4().hex[:12]}"
    status, raw, _ = pg_service.post("/predict", json.dumps(row).encode(), headers={"X-Request-ID": rid})
    answer = json.loads(raw)
    assert status == 200, answer
    _wait(pg_url, "SELECT 1 FROM predictions WHERE request_id = %(r)s", {"r": rid}, bool)
    status, stored = pg_service.request("/feedback", {"request_id": rid, "label": answer[0]["prediction"]})
    assert status == 200 and stored["stored"] == 1, stored
    assert _rows(pg_url, "SELECT request_id FROM feedback WHERE request_id = %(r)s", {"r": rid}) == [(rid,)]

    bad = {k: v for k, v in row.items() if k != next(iter(row))}  # a field missing: refused, counted
    assert pg_service.request("/predict", bad)[0] == 422
    events = _wait(pg_url, "SELECT kind, reason FROM events WHERE kind = 'invalid'", {}, bool)
    assert ("invalid", "missing_field") in events

    version = answer[0]["model_version"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = pg_service.request("/admin/active", {"version": version}, headers=auth)
    assert status == 200, body
    control = _rows(pg_url, "SELECT value FROM control WHERE name = 'active'")
    assert [json.loads(v) for (v,) in control] == [version]
    assert _rows(pg_url, "SELECT MAX(version) FROM nb2prod_schema")[0][0] >= 1


def test_nb2prod_monitor_reads_the_postgresql_store(
    captured_project: CapturedProject, pg_service: Service, pg_url: str
) -> None:
    rows = captured_project.data["expected"]["rows"]
    before = _rows(pg_url, "SELECT count(*) FROM predictions")[0][0]
    assert pg_service.request("/predict", {"rows": rows})[0] == 200
    want = before + len(rows)
    logged = _wait(pg_url, "SELECT count(*) FROM predictions", {}, lambda r: r[0][0] >= want)[0][0]
    assert logged == want
    _wait(
        pg_url,
        "SELECT COALESCE(SUM(n), 0) FROM sketches WHERE col = '__prediction__'",
        {},
        lambda r: r[0][0] >= logged,
    )
    out = subprocess.run(
        [sys.executable, "-m", "nb2prod", "monitor", MODEL, "--since", "1h"],
        cwd=captured_project.home,
        env=captured_project.env(NB2PROD_PREDICTION_STORE=pg_url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in out.stdout + out.stderr
    # the version table of the report counts every row the service logged into PostgreSQL
    assert re.search(rf"^1 +{logged} +100\.0%", out.stdout, re.M), out.stdout[-3000:]


OUTAGE_S = 30


def test_a_30_s_postgresql_outage_loses_no_answered_row(
    captured_project: CapturedProject, pg_service: Service, pg_url: str
) -> None:
    """The store's database refuses every connection for 30 s (its open connections killed,
    new ones refused, as in a restart): the service keeps answering, stays ready, says logging
    is degraded, and afterwards every answered row is in PostgreSQL exactly once.

    Runs last in the module: the outage is of this module's own database only.
    """
    import threading

    import psycopg

    from tests.pg import libpq_url, with_database

    rows = captured_project.data["expected"]["rows"]
    database = libpq_url(pg_url).rsplit("/", 1)[1].split("?", 1)[0]
    admin = libpq_url(with_database(pg_url, "postgres"))
    tag = f"out-{uuid.uuid4().hex[:8]}"
    answered: list[str] = []
    seen: dict[str, set[int]] = {"ready": set(), "degraded": set()}
    down, up = threading.Event(), threading.Event()

    def outage() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
            down.set()
            time.sleep(OUTAGE_S)
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            up.set()

    def client(worker: int) -> None:
        i = 0
        while not up.is_set() and i < 2000:  # bounded: ~40 s of 4 clients at most
            rid = f"{tag}-{worker}-{i}"
            status, raw, _ = pg_service.post(
                "/predict", json.dumps(rows[i % len(rows)]).encode(), headers={"X-Request-ID": rid}
            )
            assert status == 200, raw[:300]
            answered.append(json.loads(raw)[0]["request_id"])
            i += 1
            time.sleep(0.02)

    cut = threading.Thread(target=outage)
    clients = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    cut.start()
    assert down.wait(30)
    while not up.is_set():
        seen["ready"].add(pg_service.get("/readyz")[0])
        metrics = pg_service.get("/metrics")[1].decode(errors="replace")
        found = re.search(r"^nb2prod_monitor_degraded(?:\{[^}]*\})? ([0-9.]+)", metrics, re.M)
        if found:
            seen["degraded"].add(int(float(found.group(1))))
        time.sleep(1.0)
    cut.join()
    for thread in clients:
        thread.join(60)
    assert seen["ready"] == {200}  # /readyz stayed ready all through the outage
    assert 1 in seen["degraded"]  # and /metrics said logging was degraded
    assert len(answered) > 100
    logged = _wait(
        pg_url,
        "SELECT request_id, count(*) FROM predictions WHERE request_id LIKE %(tag)s GROUP BY request_id",
        {"tag": f"{tag}-%"},
        lambda r: len(r) >= len(answered),
        timeout=90,
    )
    counts = dict(logged)
    assert sorted(counts) == sorted(answered)  # every answered row is in the store...
    assert set(counts.values()) == {1}  # ...exactly once
