"""The served OpenAPI document tells the truth, and schemathesis finds nothing against it.

``nb2prod serve`` of the shared ``TUMOR`` capture on 127.0.0.1: the document's ``/predict``
body forms, statuses and error bodies are checked against what the service really answers,
then schemathesis (coverage, fuzzing, stateful; bounded in examples and time) runs
``not_a_server_error``, ``status_code_conformance`` and ``response_schema_conformance``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject, Service

pytestmark = pytest.mark.slow

CAPTURE = TUMOR
MODEL = TUMOR_MODEL
TOKEN = "admin-" + uuid.uuid4().hex
SERVICE_ENV = {"NB2PROD_ADMIN_TOKEN": TOKEN}
# A row the contract admits but no model version can answer (it overflows once scaled)
# gets 503, as documented: schemathesis finds such rows; every other 5xx is a failure.
SCHEMATHESIS_CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


@pytest.fixture(scope="module")
def doc(service: Service) -> dict[str, Any]:
    status, raw = service.get("/docs.json")
    assert status == 200
    out: dict[str, Any] = json.loads(raw)
    return out


def _schema(op: dict[str, Any], status: str) -> dict[str, Any]:
    out: dict[str, Any] = op["responses"][status]["content"]["application/json"]["schema"]
    return out


def _conforms(instance: Any, schema: dict[str, Any], doc: dict[str, Any]) -> None:
    import jsonschema

    resolver_doc = dict(schema, components=doc.get("components", {}))
    jsonschema.validate(instance, resolver_doc)


def test_predict_documents_the_three_body_forms_and_no_internal_field(
    doc: dict[str, Any], captured_project: CapturedProject
) -> None:
    import jsonschema

    op = doc["paths"]["/predict"]["post"]
    forms = op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    row = captured_project.data["expected"]["rows"][0]
    assert len(forms) == 3
    one, many, wrapped = forms
    assert set(one["properties"]) == set(row) and set(one["required"]) == set(row)
    assert one["additionalProperties"] is False
    assert many["type"] == "array" and many["items"] == one and many["maxItems"] == 1000
    assert wrapped["properties"]["rows"] == many and wrapped["required"] == ["rows"]
    assert "nb2prod_request_id" not in json.dumps(doc)
    for body in (row, [row, row], {"rows": [row]}):
        matches = []
        for form in forms:
            try:
                _conforms(body, form, doc)
                matches.append(form)
            except jsonschema.ValidationError:
                continue
        assert len(matches) == 1, body
    assert set(op["responses"]) >= {"200", "400", "413", "415", "422", "503"}


def test_documented_error_bodies_are_what_the_service_answers(
    doc: dict[str, Any], captured_project: CapturedProject, service: Service
) -> None:
    row = captured_project.data["expected"]["rows"][0]
    predict = doc["paths"]["/predict"]["post"]
    cases = [
        ("200", json.dumps(row).encode(), "application/json"),
        ("400", b"{", "application/json"),
        ("413", json.dumps([row] * 1500).encode(), "application/json"),
        ("415", json.dumps(row).encode(), "text/plain"),
        ("422", json.dumps(dict(row, site="nowhere")).encode(), "application/json"),
        ("503", json.dumps(dict(row, **{"mean smoothness": 1.7e308})).encode(), "application/json"),
    ]
    for status, body, ctype in cases:
        got, raw, _ = service.post("/predict", body, ctype)
        assert str(got) == status, (status, raw[:300])
        _conforms(json.loads(raw), _schema(predict, status), doc)

    feedback = doc["paths"]["/feedback"]["post"]
    assert set(feedback["responses"]) >= {"200", "400", "413", "415", "422"}
    for body in ({"request_id": "r1"}, {"request_id": "a/b", "label": 1}, {"labels": []}, [1]):
        got, raw, _ = service.post("/feedback", json.dumps(body).encode())
        assert got == 422, raw
        _conforms(json.loads(raw), _schema(feedback, "422"), doc)
    label = feedback["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]["properties"][
        "label"
    ]
    assert set(map(str, label["enum"])) == {"0", "1"}

    for path in ("/admin/active", "/admin/canary"):
        op = doc["paths"][path]["post"]
        assert set(op["responses"]) >= {"200", "401", "403", "409", "422"}
        got, raw, _ = service.post(
            path, json.dumps({"version": "9"}).encode(), headers={"Authorization": TOKEN}
        )
        assert got == 401
        _conforms(json.loads(raw), _schema(op, "401"), doc)
    active = doc["paths"]["/admin/active"]["post"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    got, raw, _ = service.post("/admin/active", json.dumps({"version": "9"}).encode(), headers=auth)
    assert got == 409
    _conforms(json.loads(raw), _schema(active, "409"), doc)


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    service: Service, tmp_path: Path
) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is in the dev extra: pip install -e '.[dev]'"
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    har = tmp_path / "run.har"
    argv = [
        exe,
        "--config-file",
        str(config),
        "run",
        f"{service.url}/docs.json",
        "--url",
        service.url,
        "--checks",
        "not_a_server_error,status_code_conformance,response_schema_conformance",
        "--max-examples",
        "25",
        "--max-time",
        "45",
        "--seed",
        "20261129",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--no-color",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=85, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    answered = [e for e in entries if e["request"]["url"].endswith("/predict")]
    assert sum(e["response"]["status"] == 200 for e in answered) >= 5, "no positive case reached the model"
    assert not [e for e in entries if e["response"]["status"] == 500]
    assert "Traceback" not in service.log_text()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc-123_x.y", None),
        ("r" * 64, None),
        ("", "empty"),
        ("r" * 65, "65 characters"),
        ("../../etc/passwd", "only letters, digits"),
        ("a b", "only letters, digits"),
        (7, "a string"),
    ],
)
def test_one_request_id_check_for_the_endpoint_and_the_cli(value: object, problem: str | None) -> None:
    from nb2prod.serving.feedback import Feedback
    from nb2prod.serving.schema import request_id_problem, validate_request_id

    found = request_id_problem(value)
    assert (found is None) if problem is None else (problem in (found or ""))
    if problem is None:
        assert validate_request_id(value) == value
        assert Feedback.model_validate({"request_id": value, "label": 1}).request_id == value
    else:
        with pytest.raises(ValueError, match="request id"):
            validate_request_id(value)
        assert str(value) not in (found or "") or not str(value)
