"""The exported service over real HTTP: ``bentoml serve`` on 127.0.0.1, a real client.

The project is the shared ``TUMOR`` capture (tests/captures.py). One server
(``nb2prod serve tumor``) is started for the module; the tampered-artifact test and the
plain-``bentoml serve`` test start their own.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import (
    CapturedProject,
    Service,
    bentoml_serve_argv,
    default_store,
    free_port,
    new_project_home,
    serving,
)

pytestmark = pytest.mark.slow

CAPTURE = TUMOR
MODEL = TUMOR_MODEL


def _row(captured_project: CapturedProject, i: int = 0) -> dict[str, Any]:
    return dict(captured_project.data["expected"]["rows"][i])


def test_nb2prod_serve_logs_inside_the_project_home(
    captured_project: CapturedProject, service: Service
) -> None:
    assert service.store == captured_project.home / ".nb2prod" / "serving" / MODEL / "predictions.db"
    assert service.post("/predict", json.dumps(_row(captured_project)).encode())[0] == 200
    deadline = time.monotonic() + 20
    while not _logged_ids(service.store) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _logged_ids(service.store)


def test_predictions_equal_the_notebook_model(captured_project: CapturedProject, service: Service) -> None:
    import bentoml

    exp = captured_project.data["expected"]
    with bentoml.SyncHTTPClient(service.url) as client:
        out = client.predict(rows=exp["rows"])
    assert [o["prediction"] for o in out] == exp["prediction"]
    for got, want in zip(out, exp["proba"], strict=True):
        probs = [got["probabilities"][str(c)] for c in exp["classes"]]
        assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(probs, want, strict=True))
    # every row of a batch has its own id (feedback names rows): the request's id plus -i
    ids = [o["request_id"] for o in out]
    stem = ids[0].rsplit("-", 1)[0]
    assert ids == [f"{stem}-{i}" for i in range(len(out))]
    assert {o["model_version"] for o in out} == {"1"}


def test_one_row_over_raw_http_has_a_request_id(captured_project: CapturedProject, service: Service) -> None:
    status, body, headers = service.post("/predict", json.dumps(_row(captured_project, 3)).encode())
    assert status == 200
    out = json.loads(body)
    assert len(out) == 1 and out[0]["prediction"] == captured_project.data["expected"]["prediction"][3]
    assert set(out[0]["probabilities"]) == {"0", "1"}
    assert out[0]["request_id"] == headers["x-request-id"]
    status, body, headers = service.post(
        "/predict", json.dumps([_row(captured_project, 3)]).encode(), headers={"X-Request-ID": "abc-123"}
    )
    assert status == 200 and json.loads(body)[0]["request_id"] == "abc-123" == headers["x-request-id"]


def _with(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in changes.items():
        out[key.replace("_", " ")] = value
    return out


def _raw(row: dict[str, Any], column: str, literal: str) -> bytes:
    """A row as JSON with ``column`` set to a raw JSON literal (NaN, Infinity, a huge number)."""
    marker = "__RAW__"
    text = json.dumps(dict(row, **{column: marker}))
    return text.replace(f'"{marker}"', literal).encode()


SECRET = "S3CRET-PAYLOAD"


def bad_cases(row: dict[str, Any]) -> list[tuple[str, bytes, str | None, int, str, str | None]]:
    """(id, body, content type, status, reason, field named in the message)."""
    dump = lambda x: json.dumps(x).encode()  # noqa: E731
    no_radius = {k: v for k, v in row.items() if k != "mean radius"}
    return [
        ("malformed-json", b'{"site": "clinic-a", ', "application/json", 400, "malformed_json", None),
        ("wrong-content-type", dump(row), "text/plain", 415, "content_type", None),
        ("no-content-type", dump(row), None, 415, "content_type", None),
        ("form-content-type", dump(row), "application/x-www-form-urlencoded", 415, "content_type", None),
        ("empty-body", b"", "application/json", 400, "empty_body", None),
        ("blank-body", b"  \n ", "application/json", 400, "empty_body", None),
        ("missing-field", dump(no_radius), "application/json", 422, "missing_field", "mean radius"),
        ("extra-field", dump(dict(row, zzz_extra=1.0)), "application/json", 422, "extra_field", "zzz_extra"),
        (
            "string-in-float",
            dump(_with(row, mean_radius=SECRET)),
            "application/json",
            422,
            "type",
            "mean radius",
        ),
        (
            "numeric-string-in-float",
            dump(_with(row, mean_radius="12.5")),
            "application/json",
            422,
            "type",
            "mean radius",
        ),
        ("nan", _raw(row, "mean radius", "NaN"), "application/json", 422, "not_finite", "mean radius"),
        ("inf", _raw(row, "mean radius", "Infinity"), "application/json", 422, "not_finite", "mean radius"),
        ("inf-in-nullable", _raw(row, "bmi", "-Infinity"), "application/json", 422, "not_finite", "bmi"),
        ("huge-float", _raw(row, "mean area", "1e999"), "application/json", 422, "not_finite", "mean area"),
        (
            "null-non-nullable",
            dump(_with(row, mean_radius=None)),
            "application/json",
            422,
            "null",
            "mean radius",
        ),
        ("unseen-category", dump(dict(row, site=SECRET)), "application/json", 422, "unseen_category", "site"),
        ("category-as-number", dump(dict(row, site=1)), "application/json", 422, "unseen_category", "site"),
        ("int-for-bool", dump(dict(row, screened=1)), "application/json", 422, "type", "screened"),
        ("string-for-bool", dump(dict(row, screened="true")), "application/json", 422, "type", "screened"),
        ("float-for-int", dump(dict(row, visits=2.5)), "application/json", 422, "type", "visits"),
        (
            "int-out-of-range",
            _raw(row, "visits", str(2**70)),
            "application/json",
            422,
            "out_of_range",
            "visits",
        ),
        ("empty-batch", b"[]", "application/json", 400, "empty_batch", None),
        ("empty-rows", b'{"rows": []}', "application/json", 400, "empty_batch", None),
        ("rows-not-a-list", b'{"rows": {"a": 1}}', "application/json", 400, "not_an_object", None),
        ("top-level-string", b'"hello"', "application/json", 400, "not_an_object", None),
        ("row-not-an-object", b"[1, 2]", "application/json", 422, "type", "rows[0]"),
        (
            "bad-second-row",
            dump([row, _with(row, mean_radius="x")]),
            "application/json",
            422,
            "type",
            "rows[1].mean radius",
        ),
        ("oversized-body", dump([row] * 1500), "application/json", 413, "too_large", None),
        ("too-many-rows", dump([{"x": 1}] * 1001), "application/json", 413, "too_many_rows", None),
        (
            "pickle",
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
            "application/python-pickle",
            415,
            "pickle_refused",
            None,
        ),
        ("octet-stream", b"\x80\x04K\x01.", "application/octet-stream", 415, "pickle_refused", None),
        ("not-utf8", b'{"site": "\xff\xfe"}', "application/json", 400, "malformed_json", None),
        ("nested-too-deep", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "malformed_json", None),
    ]


def test_bad_inputs_get_a_4xx_naming_the_field(captured_project: CapturedProject, service: Service) -> None:
    row = _row(captured_project)
    cases = bad_cases(row)
    assert len(cases) >= 20
    failures = []
    for case_id, body, ctype, status, reason, field in cases:
        got, raw, _ = service.post("/predict", body, ctype)
        try:
            payload = json.loads(raw)
        except ValueError:
            failures.append(f"{case_id}: {got} non-JSON body {raw[:200]!r}")
            continue
        problems = []
        if got != status:
            problems.append(f"status {got} != {status}")
        if payload.get("error") != "invalid_input" or payload.get("reason") != reason:
            problems.append(f"reason {payload.get('reason')} != {reason}")
        if field is not None and field not in payload.get("message", ""):
            problems.append(f"field {field!r} not named in {payload.get('message')!r}")
        if SECRET in raw.decode("utf-8", "replace") or "Traceback" in raw.decode("utf-8", "replace"):
            problems.append("payload echoed or traceback in the body")
        if problems:
            failures.append(f"{case_id}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert "Traceback" not in service.log_text()
    status, metrics = service.get("/metrics")
    assert status == 200
    text = metrics.decode()
    for reason in ("malformed_json", "unseen_category", "pickle_refused", "not_finite", "null"):
        assert f'nb2prod_invalid_input_total{{reason="{reason}"}}' in text, reason
    # the store counts refusals per column, wherever the row sat in the request (monitor's
    # "by field"): rows[1].mean radius is recorded as mean radius, as a batch records it
    assert service.store is not None
    deadline = time.monotonic() + 20
    while ("type", "mean radius") not in (fields := _invalid_fields(service.store)):
        assert time.monotonic() < deadline, fields
        time.sleep(0.2)
    assert not [f for _, f in fields if f and re.match(r"row\.|rows\[", f)], fields


def test_metadata_carries_provenance(
    captured_project: CapturedProject, service: Service, exported: Any
) -> None:
    status, body = service.get("/metadata")
    assert status == 200
    meta = json.loads(body)
    assert meta["model"] == MODEL and meta["model_version"] == "1"
    assert meta["bento"] == exported.tag
    assert meta["run_id"] and meta["environment_digest"].startswith("sha256:")
    assert meta["data_digests"]["dataset:train"].startswith("xxh3_128:")
    assert meta["exported_at"] and meta["ready"] is True


def _invalid_fields(store: Path) -> list[tuple[str, str | None]]:
    """(reason, field) of the ``invalid`` events the service has written so far."""
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT reason, field FROM events WHERE kind = 'invalid'").fetchall()
    except sqlite3.OperationalError:  # the writer has not created the table yet
        return []
    finally:
        conn.close()


def _logged_ids(store: Path) -> list[str]:
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM predictions")]
    except sqlite3.OperationalError:  # the writer has not created the table yet
        return []
    finally:
        conn.close()


def _wait_logged(store: Path, prefix: str, n: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        logged = [i for i in _logged_ids(store) if i.startswith(prefix)]
        if len(logged) >= n or time.monotonic() > deadline:
            return logged
        time.sleep(0.2)


def test_served_equals_logged_after_a_burst(captured_project: CapturedProject, service: Service) -> None:
    assert service.store is not None
    rows = captured_project.data["expected"]["rows"]
    ids = [f"burst-{uuid.uuid4().hex[:12]}-{i}" for i in range(240)]

    def call(i: int) -> int:
        body = json.dumps(rows[i % len(rows)]).encode()
        return service.post("/predict", body, headers={"X-Request-ID": ids[i]})[0]

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(call, range(len(ids))))
    assert statuses == [200] * len(ids)
    logged = _wait_logged(service.store, "burst-", len(ids))
    assert sorted(logged) == sorted(ids)
    text = service.get("/metrics")[1].decode()
    assert "nb2prod_monitor_dropped_total 0.0" in text


def test_drift_stays_quiet_on_held_out_rows_then_moves_on_shifted_input(
    captured_project: CapturedProject, service: Service
) -> None:
    rows = captured_project.data["expected"]["rows"]
    for start in range(0, len(rows), 50):
        assert service.post("/predict", json.dumps(rows[start : start + 50]).encode())[0] == 200
    time.sleep(1.0)
    quiet = json.loads(service.get("/drift")[1])
    assert quiet["status"] == "ok", quiet["drifted"]
    assert quiet["window_rows"] >= 50
    assert max(v["psi"] for v in quiet["features"].values() if v["psi"] is not None) < quiet["threshold"]

    shifted = [dict(r, **{"mean radius": r["mean radius"] * 3}, site="clinic-c") for r in rows]
    for _ in range(3):
        for start in range(0, len(shifted), 50):
            assert service.post("/predict", json.dumps(shifted[start : start + 50]).encode())[0] == 200
    time.sleep(1.0)
    moved = json.loads(service.get("/drift")[1])
    assert moved["status"] == "drift"
    assert {"mean radius", "site"} <= set(moved["drifted"])
    assert moved["features"]["mean radius"]["psi"] > 1.0
    assert moved["features"]["mean texture"]["psi"] < quiet["threshold"]
    text = service.get("/metrics")[1].decode()
    assert 'nb2prod_feature_psi{feature="mean radius"}' in text


def test_tampered_artifact_never_becomes_ready(
    captured_project: CapturedProject, exported: Any, tmp_path: Path
) -> None:
    from nb2prod.export import serve_command

    home = tmp_path / "bentoml"
    shutil.copytree(
        exported.bentoml_home, home, ignore=shutil.ignore_patterns(".staging-*", ".nb2prod-locks")
    )
    model_dir = home / "models" / MODEL / exported.model_tag.split(":")[1] / "mlflow"
    with (model_dir / "model.skops").open("ab") as fh:
        fh.write(b"\0")
    cmd = serve_command(MODEL, port=free_port(), settings=captured_project.settings, tag=exported.tag)
    env = dict(cmd.env, NB2PROD_PREDICTION_STORE=str(tmp_path / "p.db"), BENTOML_HOME=str(home))
    with serving(cmd.argv, env, tmp_path / "serve.log", ready=False) as srv:
        deadline = time.monotonic() + 60
        saw_live = False
        while time.monotonic() < deadline:
            assert srv.get("/readyz", timeout=2)[0] != 200
            saw_live = saw_live or srv.get("/livez", timeout=2)[0] == 200
            if "integrity check failed" in srv.log_text() and saw_live:
                break
            time.sleep(0.3)
        assert "integrity check failed: file model.skops has sha256:" in srv.log_text()
        for _ in range(5):
            assert srv.get("/readyz", timeout=2)[0] == 503
            time.sleep(0.2)
        status, _body, _ = srv.post("/predict", json.dumps(_row(captured_project)).encode())
        assert status == 503
        meta = json.loads(srv.get("/metadata")[1])
        assert meta["ready"] is False and "model.skops" in meta["failure"]


def test_plain_bentoml_serve_logs_where_nb2prod_monitor_reads(
    captured_project: CapturedProject, exported: Any, tmp_path: Path, store_template: Path
) -> None:
    """A Bento started with ``bentoml serve`` itself (no nb2prod serve, no store variable)."""
    # its own project (a copy of the BentoML store): the module's server logs to the other one
    home = new_project_home(tmp_path, store_template)
    shutil.copytree(
        exported.bentoml_home,
        home / ".nb2prod" / "bentoml",
        ignore=shutil.ignore_patterns(".staging-*", ".nb2prod-locks"),
    )
    other = CapturedProject(home=home, settings=None)
    env = other.env(BENTOML_HOME=str(home / ".nb2prod" / "bentoml"), BENTOML_DO_NOT_TRACK="True")
    argv = bentoml_serve_argv(exported.tag, free_port())
    rows = captured_project.data["expected"]["rows"]
    with serving(argv, env, tmp_path / "bentoml-serve.log", cwd=tmp_path) as srv:
        ids = [f"plain-{i}" for i in range(60)]
        for i, rid in enumerate(ids):
            body = json.dumps(rows[i % len(rows)]).encode()
            assert srv.post("/predict", body, headers={"X-Request-ID": rid})[0] == 200
        assert sorted(_wait_logged(default_store(other, MODEL), "plain-", len(ids))) == sorted(ids)
        time.sleep(2.5)  # the writer flushes its sketches each second
    done = other.cli("monitor", MODEL, "--json")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == len(ids), report


def test_admin_endpoints_are_off_without_a_token(service: Service) -> None:
    """This module's service has no NB2PROD_ADMIN_TOKEN: a switch is refused with 403, as documented."""
    doc = json.loads(service.get("/docs.json")[1])
    documented = doc["paths"]["/admin/active"]["post"]["responses"]
    for auth in ({}, {"Authorization": "Bearer anything"}):
        status, raw, _ = service.post("/admin/active", json.dumps({"version": "1"}).encode(), headers=auth)
        out = json.loads(raw)
        assert status == 403 and "403" in documented
        assert out["error"] == "forbidden" and "NB2PROD_ADMIN_TOKEN" in out["message"]
