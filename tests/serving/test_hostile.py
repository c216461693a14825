"""Hostile or careless clients against the exported service: ``nb2prod serve`` on 127.0.0.1.

Tokens in the wrong form, a ``/feedback`` that is flooded, overwritten or sent 20 MB, bodies
of 20-100 MB from a client that writes everything before reading (urllib), request heads
that never finish, a 100,000-key row, and a row no model version can answer mixed into a
burst of good ones. The project is the shared ``TUMOR`` capture (tests/captures.py).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject, Service

pytestmark = pytest.mark.slow

CAPTURE = TUMOR
MODEL = TUMOR_MODEL
TOKEN = "admin-" + uuid.uuid4().hex
FEEDBACK_TOKEN = "labels-" + uuid.uuid4().hex
HEADER_TIMEOUT_S = 2.0
SERVICE_ENV = {
    "NB2PROD_ADMIN_TOKEN": TOKEN,
    "NB2PROD_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
    "NB2PROD_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
}
SECRET = "S3CRET-LABEL"
BEARER = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


def _row(project: CapturedProject, i: int = 0) -> dict[str, Any]:
    return dict(project.data["expected"]["rows"][i])


def _json(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw)
    return out


def _query(store: Path | None, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    assert store is not None
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql, params))
    except sqlite3.OperationalError:  # the writer has not created the table yet
        return []
    finally:
        conn.close()


def _predicted(service: Service, project: CapturedProject, i: int = 0) -> str:
    """Predict one row and wait until its prediction is logged; its request id."""
    rid = f"hostile-{uuid.uuid4().hex[:16]}"
    status, _, _ = service.post(
        "/predict", json.dumps(_row(project, i)).encode(), headers={"X-Request-ID": rid}
    )
    assert status == 200
    deadline = time.monotonic() + 20
    while not _query(service.store, "SELECT 1 FROM predictions WHERE request_id = ?", rid):
        assert time.monotonic() < deadline, "the prediction was never logged"
        time.sleep(0.2)
    return rid


def test_admin_takes_the_token_only_as_bearer(service: Service) -> None:
    body = json.dumps({"version": None, "percent": 0}).encode()
    for header in (TOKEN, f"Token {TOKEN}", f"Bearer{TOKEN}", f"Bearer  {TOKEN}", "Bearer wrong", ""):
        status, raw, _ = service.post(
            "/admin/canary", body, headers={"Authorization": header} if header else {}
        )
        out = _json(raw)
        assert status == 401, (header, status, out)
        assert out["error"] == "unauthorized" and "Authorization: Bearer <token>" in out["message"]
        assert TOKEN not in raw.decode()
    status, raw, _ = service.post("/admin/canary", body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and _json(raw)["canary"] is None


def test_feedback_is_behind_its_token_when_one_is_set(
    captured_project: CapturedProject, service: Service
) -> None:
    body = json.dumps({"request_id": "anything", "label": 1}).encode()
    assert service.post("/feedback", body)[0] == 401
    assert service.post("/feedback", body, headers={"Authorization": FEEDBACK_TOKEN})[0] == 401
    assert service.post("/feedback", body, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 401
    status, raw, _ = service.post("/feedback", body, headers=BEARER)
    assert status == 200 and _json(raw)["pending"] == 1  # no such prediction logged (yet)


def test_feedback_keeps_the_first_label_and_stores_no_unknown_ids(
    captured_project: CapturedProject, service: Service
) -> None:
    rid = _predicted(service, captured_project)
    first = service.post("/feedback", json.dumps({"request_id": rid, "label": 1}).encode(), headers=BEARER)
    assert first[0] == 200
    assert _json(first[1]) == {"stored": 1, "matched": 1, "pending": 0, "unknown": 0, "already_labelled": 0}
    again = service.post("/feedback", json.dumps({"request_id": rid, "label": 0}).encode(), headers=BEARER)
    assert again[0] == 200
    assert _json(again[1]) == {"stored": 0, "matched": 1, "pending": 0, "unknown": 0, "already_labelled": 1}
    assert _query(service.store, "SELECT label FROM feedback WHERE request_id = ?", rid) == [("1",)]

    # a label that comes before its prediction is logged is held, then stored
    early = f"early-{uuid.uuid4().hex[:16]}"
    status, raw, _ = service.post(
        "/feedback", json.dumps({"request_id": early, "label": 0}).encode(), headers=BEARER
    )
    assert status == 200 and _json(raw)["pending"] == 1
    assert (
        service.post(
            "/predict", json.dumps(_row(captured_project)).encode(), headers={"X-Request-ID": early}
        )[0]
        == 200
    )
    deadline = time.monotonic() + 20
    while not _query(service.store, "SELECT label FROM feedback WHERE request_id = ?", early):
        assert time.monotonic() < deadline, "the held label was never stored"
        time.sleep(0.2)
    assert _query(service.store, "SELECT label FROM feedback WHERE request_id = ?", early) == [("0",)]

    # labels for request ids never answered: held in bounded memory, never stored
    before = _query(service.store, "SELECT COUNT(*) FROM feedback")[0][0]
    flood = {"labels": [{"request_id": f"nobody-{i}", "label": 1} for i in range(10_000)]}
    status, raw, _ = service.post("/feedback", json.dumps(flood).encode(), headers=BEARER)
    out = _json(raw)
    assert status == 200 and out["stored"] == out["matched"] == 0
    assert out["pending"] + out["unknown"] == 10_000 and out["pending"] <= 10_000
    more = {"labels": [{"request_id": f"nobody-else-{i}", "label": 1} for i in range(10_000)]}
    status, raw, _ = service.post("/feedback", json.dumps(more).encode(), headers=BEARER)
    assert status == 200 and _json(raw)["unknown"] == 10_000  # no room left: refused, counted
    time.sleep(1.5)  # the held labels are retried each second: still none stored
    assert _query(service.store, "SELECT COUNT(*) FROM feedback")[0][0] == before
    metrics = service.get("/metrics")[1].decode()
    assert 'nb2prod_invalid_input_total{reason="unknown_request_id"}' in metrics


def test_feedback_errors_name_the_field_and_never_echo_the_input(service: Service) -> None:
    cases: list[tuple[str, bytes, int, str | None, str | None]] = [
        (
            "path-like id",
            json.dumps({"request_id": "../../etc/passwd", "label": 1}).encode(),
            422,
            "request_id",
            "body.request_id",
        ),
        (
            "id too long",
            json.dumps({"request_id": "r" * 65, "label": 1}).encode(),
            422,
            "request_id",
            "body.request_id",
        ),
        (
            "not a class",
            json.dumps({"request_id": "r1", "label": SECRET}).encode(),
            422,
            "unknown_class",
            "body.label",
        ),
        (
            "not a class in a batch",
            json.dumps(
                {"labels": [{"request_id": "r1", "label": 1}, {"request_id": "r2", "label": 7}]}
            ).encode(),
            422,
            "unknown_class",
            "body.labels[1].label",
        ),
        ("no label", json.dumps({"request_id": "r1"}).encode(), 422, "missing_field", "body.label"),
        (
            "extra key",
            json.dumps({"request_id": "r1", "label": 1, "weight": 1}).encode(),
            422,
            "extra_field",
            "body.weight",
        ),
        ("not JSON", b'{"request_id": "r1", ', 400, "malformed_json", None),
        (
            "a huge bad label",
            json.dumps({"request_id": "r1", "label": SECRET * 80_000}).encode(),
            422,
            None,
            "body.label",
        ),
    ]
    failures = []
    for name, body, status, reason, field in cases:
        got, raw, _ = service.post("/feedback", body, headers=BEARER)
        out = _json(raw)
        if got != status or (reason is not None and out.get("reason") != reason):
            failures.append(f"{name}: {got} {out.get('reason')} != {status} {reason}")
        if field is not None and field not in out.get("message", ""):
            failures.append(f"{name}: {field!r} not named in {out.get('message')!r}")
        if SECRET in raw.decode() or "../../etc" in raw.decode() or len(raw) > 4000:
            failures.append(f"{name}: the input is echoed ({len(raw)} bytes)")
        if set(out) - {"error", "reason", "message", "detail", "request_id"}:
            failures.append(f"{name}: not the error body: {sorted(out)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("megabytes", [20, 100])
def test_urllib_reads_the_413_of_a_huge_body(service: Service, megabytes: int) -> None:
    """urllib writes the whole body before it reads: the service drains it, then answers 413."""
    body = b"[" + b"1," * (megabytes << 19) + b"1]"
    for path, headers in (("/predict", {}), ("/feedback", BEARER)):
        status, raw, _ = service.post(path, body, headers=headers, timeout=120)
        out = _json(raw)
        assert status == 413 and out["reason"] == "too_large", (path, status, out)
        assert len(raw) < 1000
    status, raw, _ = service.post("/predict", body, content_type="text/plain", timeout=120)
    assert status == 415 and _json(raw)["reason"] == "content_type"


def test_a_request_head_that_never_finishes_is_closed(
    captured_project: CapturedProject, service: Service
) -> None:
    port = int(service.url.rsplit(":", 1)[1])
    stalled = []
    for _ in range(200):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        stalled.append(conn)
    # a keep-alive client that pauses between requests for less than the timeout is not cut off
    import http.client

    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        client.request("GET", "/livez")
        assert client.getresponse().read() is not None
        time.sleep(HEADER_TIMEOUT_S / 4)
    deadline = time.monotonic() + HEADER_TIMEOUT_S + 20
    open_ = list(stalled)
    while open_ and time.monotonic() < deadline:
        open_ = [c for c in open_ if not _closed(c)]
        time.sleep(0.2)
    assert not open_, f"{len(open_)} of {len(stalled)} stalled connections still open"
    for conn in stalled:
        conn.close()
    client.request("GET", "/livez")
    assert client.getresponse().status == 200
    client.close()
    assert service.post("/predict", json.dumps(_row(captured_project)).encode())[0] == 200


def _closed(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: closed as well
        return True


def test_a_100000_key_row_is_refused_without_listing_every_key(service: Service) -> None:
    body = json.dumps({f"{i}": 0 for i in range(100_000)}, separators=(",", ":")).encode()
    assert len(body) < (1 << 20)  # under the body cap: it reaches the row check
    status, raw, _ = service.post("/predict", body)
    out = _json(raw)
    assert status == 422 and out["reason"] == "extra_field"
    assert "100000 unknown fields" in out["message"] and len(raw) < 2000
    rows = json.dumps([{f"c{i}": 0 for i in range(50)}] * 900, separators=(",", ":")).encode()
    status, raw, _ = service.post("/predict", rows)
    assert status == 422 and "rows[0]: 50 unknown fields" in _json(raw)["message"]


def test_a_row_no_version_can_answer_is_a_503_and_spares_the_rest_of_its_batch(
    captured_project: CapturedProject, service: Service
) -> None:
    # finite, so the contract lets it through; scaled, it overflows and the model raises
    poison = dict(_row(captured_project), **{"mean smoothness": 1.7e308})
    status, raw, headers = service.post("/predict", json.dumps(poison).encode())
    out = _json(raw)
    assert status == 503 and out["error"] == "unavailable" and out["request_id"] == headers["x-request-id"]
    rows = captured_project.data["expected"]["rows"]
    jobs = [poison if i % 8 == 0 else rows[i % len(rows)] for i in range(240)]

    def call(row: dict[str, Any]) -> tuple[bool, int]:
        return row is poison, service.post("/predict", json.dumps(row).encode())[0]

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = set(pool.map(call, jobs))
    assert answers == {(True, 503), (False, 200)}
    status, raw, _ = service.post("/predict", json.dumps([rows[0], poison]).encode())
    assert status == 503 and _json(raw)["reason"] == "no_model_answered"
    assert "Traceback" not in service.log_text()
    assert "no model version could answer" in service.log_text()
