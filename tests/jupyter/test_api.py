"""The panel's REST API on a real ``jupyter server`` (token auth) over a real project store.

One server for the module; the project's notebook ran once in a real kernel (``TINY``).
Each action runs for real (a notebook re-run, a Bento built, aliases moved) and its effect
is read back from the store through the API and MLflow's own client. The tests run in file
order: the re-run makes version 2, which the export/promote test then moves.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nb2prod.config import Settings
from nb2prod.jupyter import core
from tests.jupyter.captures import NOTEBOOK, TINY, TINY_MODEL
from tests.jupyter.servers import Server, jupyter
from tests.served import CapturedProject

pytestmark = pytest.mark.slow

CAPTURE = TINY

ROUTES = [
    ("GET", "/nb2prod/api/project"),
    ("GET", f"/nb2prod/api/notebook?path={NOTEBOOK}"),
    ("GET", "/nb2prod/api/models"),
    ("GET", f"/nb2prod/api/models/{TINY_MODEL}"),
    ("GET", "/nb2prod/api/services"),
    ("POST", "/nb2prod/api/services"),
    ("DELETE", "/nb2prod/api/services?url=http://127.0.0.1:1"),
    ("GET", f"/nb2prod/api/report/{TINY_MODEL}"),
    ("GET", "/nb2prod/api/actions"),
    ("POST", "/nb2prod/api/actions"),
    ("GET", "/nb2prod/api/actions/0123456789ab"),
    ("DELETE", "/nb2prod/api/actions/0123456789ab"),
]


@pytest.fixture(scope="module")
def server(captured_project: CapturedProject) -> Iterator[Server]:
    log = captured_project.home.parent / "jupyter-server.log"
    with jupyter("server", captured_project.home, captured_project.env(), log) as srv:
        yield srv


def _model(server: Server) -> dict[str, Any]:
    status, model = server.get(f"/nb2prod/api/models/{TINY_MODEL}")
    assert status == 200, model
    return dict(model)


def test_every_route_refuses_a_request_without_the_token(server: Server) -> None:
    for method, path in ROUTES:
        body = {"action": "promote", "model": TINY_MODEL, "version": "1"} if method == "POST" else None
        status, answer = server.request(method, path, body, token=None)
        assert status == 403, (method, path, status, answer)
        status, _ = server.request(method, path, body, token="wrong-token")
        assert status == 403, (method, path)
    # a browser without the token but with a cookie-less POST gets no action either
    status, actions = server.get("/nb2prod/api/actions")
    assert status == 200 and actions == []


def test_notebook_payload(server: Server, captured_project: CapturedProject) -> None:
    status, view = server.get(f"/nb2prod/api/notebook?path={NOTEBOOK}")
    assert status == 200, view
    assert view["path"] == NOTEBOOK
    assert view["project"]["home"] == str(captured_project.home)
    (run,) = view["runs"]
    assert run["run_id"] == captured_project.data["run"].run_id
    assert run["status"] == "FINISHED" and run["params"]["C"] == "0.5" and run["kind"] == "run"
    assert run["duration_s"] > 0 and run["started"] > time.time() - 3600
    assert run["metrics"] and set(run["data_digests"]) >= {"train", "test"}
    assert run["changes"] == [] and run["reproduced"] is None  # nothing before it, never reproduced
    assert {d["name"]: (d["role"], d["rows"], d["columns"]) for d in view["datasets"]} == {
        "train": ("train", 80, 3),
        "test": ("test", 20, 3),
    }
    train = next(d for d in view["datasets"] if d["name"] == "train")
    assert train["digest"].startswith("xxh3_128:")
    assert [c["name"] for c in train["schema"]] == ["a", "b", "label"]
    (model,) = view["models"]
    assert model["name"] == TINY_MODEL
    assert [(v["version"], v["run_id"], v["from_notebook"]) for v in model["versions"]] == [
        ("1", run["run_id"], True)
    ]
    assert [p["name"] for p in view["parameters"]] == ["data", "C"]
    assert view["errors"] == []


def test_paths_outside_the_project_home_are_refused(
    server: Server, captured_project: CapturedProject
) -> None:
    outside = captured_project.home.parent / "outside.ipynb"
    outside.write_text("{}")
    (captured_project.home / "link.ipynb").symlink_to(outside)
    for path in ("../outside.ipynb", str(outside), "link.ipynb", "notebooks/../../outside.ipynb"):
        status, answer = server.get(f"/nb2prod/api/notebook?path={path}")
        assert status == 403, (path, answer)
        assert "outside the project home" in answer["message"] or "absolute path" in answer["message"]
        assert answer["hint"]
    status, answer = server.post("/nb2prod/api/actions", {"action": "rerun", "path": "../outside.ipynb"})
    assert status == 403, answer
    status, answer = server.get("/nb2prod/api/notebook?path=pyproject.toml")
    assert status == 400 and "not a notebook" in answer["message"]
    status, answer = server.get("/nb2prod/api/notebook")
    assert status == 400 and answer["hint"]


def test_models_route_lists_versions_and_aliases(server: Server) -> None:
    status, models = server.get("/nb2prod/api/models")
    assert status == 200
    assert [m["name"] for m in models] == [TINY_MODEL]
    model = _model(server)
    assert [v["version"] for v in model["versions"]] == ["1"]
    for version in model["versions"]:
        assert {"aliases", "bentos", "run_id", "status", "created", "url"} <= set(version)
    status, answer = server.get("/nb2prod/api/models/nope")
    assert status == 400 and "no registered model named 'nope'" in answer["message"]


def test_bad_action_requests_get_a_one_line_error(server: Server) -> None:
    cases = [
        ({"action": "explode"}, "unknown action"),
        ({"action": "promote", "model": TINY_MODEL}, "not a version number"),
        ({"action": "promote", "model": "../etc", "version": "1"}, "model name"),
        ({"action": "rerun", "path": NOTEBOOK, "parameters": ["C"]}, "parameters must be an object"),
    ]
    for body, message in cases:
        status, answer = server.post("/nb2prod/api/actions", body)
        assert status == 400, (body, answer)
        assert message in answer["message"] and answer["hint"], answer
        assert "Traceback" not in str(answer)
    status, answer = server.request("POST", "/nb2prod/api/actions", b"not json")
    assert status == 400 and "not JSON" in answer["message"]


def test_rerun_with_parameters_and_cancel(server: Server, captured_project: CapturedProject) -> None:
    # a parameter the notebook does not declare: the runner's own message and fix
    status, action = server.post(
        "/nb2prod/api/actions", {"action": "rerun", "path": NOTEBOOK, "parameters": {"CC": "2"}}
    )
    assert status == 202
    failed = server.wait_action(action["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "tiny.ipynb has no parameter 'CC'"
    assert "did you mean 'C'?" in failed["error"]["hint"]
    # a real re-run: a new run of the notebook with C=2.0, first in the panel's list
    status, action = server.post(
        "/nb2prod/api/actions", {"action": "rerun", "path": NOTEBOOK, "parameters": {"C": "2.0"}}
    )
    done = server.wait_action(action["id"])
    assert done["status"] == "done", done
    run_id = done["result"]["run_id"]
    assert done["result"]["registered"] == {TINY_MODEL: "2"}
    status, view = server.get(f"/nb2prod/api/notebook?path={NOTEBOOK}")
    latest, first = view["runs"]
    assert latest["run_id"] == run_id and latest["params"]["C"] == "2.0" and latest["status"] == "FINISHED"
    assert first["run_id"] == captured_project.data["run"].run_id
    assert latest["changes"] == []  # same code, environment and data: only a parameter moved
    assert [v["version"] for v in view["models"][0]["versions"]] == ["2", "1"]
    # cancel: the worker's whole process group ends, the action says so
    status, action = server.post(
        "/nb2prod/api/actions", {"action": "rerun", "path": NOTEBOOK, "parameters": {"C": "3.0"}}
    )
    time.sleep(1.0)
    status, cancelled = server.request("DELETE", f"/nb2prod/api/actions/{action['id']}")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    assert server.wait_action(action["id"])["status"] == "cancelled"
    status, view = server.get(f"/nb2prod/api/notebook?path={NOTEBOOK}")
    assert all(r["params"].get("C") != "3.0" or r["status"] != "FINISHED" for r in view["runs"])


def test_export_promote_rollback_change_the_store(server: Server, captured_project: CapturedProject) -> None:
    import mlflow

    client = mlflow.MlflowClient(captured_project.tracking_uri, captured_project.tracking_uri)
    before = _model(server)
    champion = before["aliases"].get("champion")  # v1 when the first version became champion
    assert champion in (None, "1")
    other = "2"  # made by the re-run test
    # export: a Bento of that version appears, carried by the version's row
    status, action = server.post(
        "/nb2prod/api/actions", {"action": "export", "model": TINY_MODEL, "version": other}
    )
    assert status == 202 and action["status"] == "running", action
    done = server.wait_action(action["id"])
    assert done["status"] == "done", done
    tag = done["result"]["tag"]
    assert tag.startswith(f"{TINY_MODEL}:v{other}-")
    model = _model(server)
    assert any(b["tag"] == tag for b in model["bentos"])
    assert tag in next(v for v in model["versions"] if v["version"] == other)["bentos"]
    # promote: the champion moves and the timeline records it
    done = server.wait_action(
        server.post("/nb2prod/api/actions", {"action": "promote", "model": TINY_MODEL, "version": other})[1][
            "id"
        ]
    )
    assert done["status"] == "done", done
    assert str(client.get_model_version_by_alias(TINY_MODEL, "champion").version) == other
    model = _model(server)
    assert model["aliases"]["champion"] == other
    assert len(model["timeline"]) == len(before["timeline"]) + 1
    move = model["timeline"][-1]
    assert (move["alias"], move["to_version"], move["from_version"]) == ("champion", other, champion)
    assert move["reason"] == "promoted in JupyterLab" and move["actor"]
    # promoting the champion again: nb2prod's message and fix, no traceback
    done = server.wait_action(
        server.post("/nb2prod/api/actions", {"action": "promote", "model": TINY_MODEL, "version": other})[1][
            "id"
        ]
    )
    assert done["status"] == "failed"
    assert done["error"] == {
        "message": f"{TINY_MODEL}/{other} is the champion already",
        "hint": "nothing to do",
    }
    # rollback: back to what it replaced (when there was one)
    if champion is not None:
        done = server.wait_action(
            server.post("/nb2prod/api/actions", {"action": "rollback", "model": TINY_MODEL})[1]["id"]
        )
        assert done["status"] == "done", done
        assert str(client.get_model_version_by_alias(TINY_MODEL, "champion").version) == champion
        assert _model(server)["timeline"][-1]["reason"] == f"rollback from {other}"


def test_services_of_a_served_model(server: Server, captured_project: CapturedProject) -> None:
    import mlflow
    import pandas as pd

    from tests.served import free_port, serving

    client = mlflow.MlflowClient(captured_project.tracking_uri, captured_project.tracking_uri)
    champion = str(client.get_model_version_by_alias(TINY_MODEL, "champion").version)
    argv = [sys.executable, "-m", "nb2prod", "serve", TINY_MODEL, "--port", str(free_port())]
    log = captured_project.home.parent / "serve-panel.log"
    with serving(argv, captured_project.env(), log, cwd=captured_project.home) as service:
        # 60 training rows (the service's drift needs 50): a moved far off its range, b as trained
        train = pd.read_csv(captured_project.home / "notebooks" / "data.csv").iloc[:60]
        rows = [{"a": float(a + 5), "b": float(b)} for a, b in zip(train.a, train.b, strict=True)]
        status, out = service.request("/predict", rows)
        assert status == 200, out
        deadline = time.monotonic() + 30
        while True:  # the service logs off the request path: wait for its rows
            status, services = server.get("/nb2prod/api/services")
            assert status == 200, services
            found = [s for s in services if s["source"] == "recorded"]
            # /drift and the request rate are read one after the other: wait until both see the rows
            if (
                found
                and (found[0]["requests_per_minute"] or 0) >= 6.0
                and found[0]["drift_status"] != "insufficient_data"
            ):
                break
            assert time.monotonic() < deadline, services
            time.sleep(0.5)
    (shown,) = found
    assert shown["url"] == service.url and shown["reachable"] and shown["model"] == TINY_MODEL
    assert shown["active_version"] == champion and shown["canary"] is None
    assert shown["bento"].startswith(f"{TINY_MODEL}:v")
    assert shown["requests_per_minute"] == 6.0  # 60 rows over the last 10 minutes
    assert shown["drift_status"] == "drift"
    assert [(f["name"], f["drifted"]) for f in shown["features"]] == [("a", True), ("b", False)]
    assert shown["features"][0]["psi"] > shown["features"][1]["psi"]


def test_report_of_a_served_model(server: Server) -> None:
    status, report = server.get(f"/nb2prod/api/report/{TINY_MODEL}")
    assert status == 200, report
    # the 60 rows the service test logged, feature a moved
    assert report["status"] == "drift" and report["rows"] == 60, {k: report[k] for k in ("status", "rows")}
    assert report["html"].lstrip().lower().startswith("<!doctype html") and "DRIFT" in report["html"]
    status, answer = server.get("/nb2prod/api/report/never-exported")
    assert status == 409 and "nb2prod export never-exported" in answer["hint"]


def test_services_added_by_url(server: Server) -> None:
    status, answer = server.post("/nb2prod/api/services", {"url": "file:///etc/passwd"})
    assert status == 400 and "is not a service URL" in answer["message"]
    status, answer = server.post("/nb2prod/api/services", {"url": "http://127.0.0.1:1/"})
    assert status == 200, answer
    status, services = server.get("/nb2prod/api/services")
    assert status == 200
    (service,) = [s for s in services if s["source"] == "added"]
    assert service["url"] == "http://127.0.0.1:1" and service["reachable"] is False and service["error"]
    status, _ = server.request("DELETE", "/nb2prod/api/services?url=http://127.0.0.1:1")
    assert status == 200
    assert [s for s in server.get("/nb2prod/api/services")[1] if s["source"] == "added"] == []


def test_store_credentials_never_reach_the_browser(tmp_path: Path) -> None:
    # the core every route uses: the store URL is redacted, also in the store's failure
    settings = Settings(home=tmp_path, tracking_uri="http://alice:s3cret@127.0.0.1:9/mlflow")
    view = core.project_view(settings)
    assert "s3cret" not in str(view) and view.tracking_uri == "http://alice:***@127.0.0.1:9/mlflow"
    assert view.ui_url == "http://127.0.0.1:9/mlflow"
    (tmp_path / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    from nb2prod.exceptions import StoreError

    with pytest.raises(StoreError) as err:
        core.notebook_view(settings, tmp_path / "nb.ipynb")
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    service = core.check_service_url("http://bob:hunter2@127.0.0.1:1")
    shown = core._service_view(settings, service, "added", None)
    assert "hunter2" not in str(shown)
