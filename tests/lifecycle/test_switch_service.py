"""Switches against a real ``nb2prod serve``: they stick across restarts, and the commands tell the truth.

The model (``regions``) has a low-cardinality string column, ``region``: the exported
contract closes it to the values seen in training, so an unseen region is a 422. Two
versions are registered; the Bento of the champion (2) carries 1 as well.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_notebook, run_notebook
from tests.served import Capture, CapturedProject, Service, free_port, serving

pytestmark = pytest.mark.slow

MODEL = "regions"
TOKEN = "switch-admin-token"

CELLS = [
    "%load_ext nb2prod\n%nb2prod start regions",
    """import json
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

frame = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 3, 30]]
rng = np.random.default_rng(1)
frame.insert(0, "region", rng.choice(["north", "south", "east", "west"], len(frame)).astype(object))
X, y = frame.drop(columns="target"), frame.target""",
    "%nb2prod data frame --role train --target target",
    """pre = ColumnTransformer([("r", OneHotEncoder(handle_unknown="ignore"), ["region"])], remainder="passthrough")
v1 = make_pipeline(pre, StandardScaler(), LogisticRegression(C=0.01, max_iter=500)).fit(X, y)""",
    "%nb2prod model v1 --name regions",
    "v2 = make_pipeline(pre, StandardScaler(), LogisticRegression(C=1.0, max_iter=500)).fit(X, y)",
    "%nb2prod model v2 --name regions",
    """with open("rows.json", "w") as fh:
    json.dump(json.loads(X.head(5).to_json(orient="records")), fh)""",
]


def _capture(project: CapturedProject) -> None:
    from nb2prod.export import export_model
    from nb2prod.lifecycle import promote

    notebook = make_notebook(project.home / "notebooks" / "regions.ipynb", CELLS)
    run_notebook(notebook, project.home)
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    # the first registered version may be the champion already (NB2PROD_FIRST_CHAMPION)
    if registry.alias_version(tracking.client(project.settings), MODEL, registry.CHAMPION) != "1":
        promote(MODEL, "1", settings=project.settings, wait=0)
    promote(MODEL, "2", settings=project.settings, wait=0)
    project.data["exported"] = export_model(f"{MODEL}@champion", settings=project.settings)
    project.data["rows"] = json.loads((notebook.parent / "rows.json").read_text())


CAPTURE = Capture(key="regions", run=_capture)
SERVICE_ENV = {"NB2PROD_ADMIN_TOKEN": TOKEN}


def _record(project: CapturedProject, service: Service) -> Path:
    """What ``nb2prod serve`` should record when it starts (see the report of issue 12)."""
    from nb2prod.lifecycle.services import record_service

    tag = project.data["exported"].tag
    return record_service(project.settings, MODEL, url=service.url, pid=service.proc.pid, tag=tag)


def _wait_version(service: Service, version: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    meta: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, meta = service.request("/metadata")
        if status == 200 and meta.get("model_version") == version and meta.get("ready"):
            return meta
        time.sleep(0.3)
    raise AssertionError(f"the service did not reach version {version}: {meta}\n{service.log_text()[-2000:]}")


def test_an_unseen_value_of_a_low_cardinality_string_column_is_a_422(
    captured_project: CapturedProject, service: Service
) -> None:
    manifest = json.loads(
        (captured_project.data["exported"].source_dir / "nb2prod_manifest.json").read_text()
    )
    region = next(c for c in manifest["schema"] if c["name"] == "region")
    assert region["kind"] == "category" and region["categories"] == ["east", "north", "south", "west"]
    row = captured_project.data["rows"][0]
    status, out = service.request("/predict", [row])
    assert status == 200, out
    status, out = service.request("/predict", [dict(row, region="atlantis")])
    assert status == 422, out
    assert "unseen_category" in json.dumps(out) and "region" in json.dumps(out)
    assert "atlantis" not in json.dumps(out)  # the input is not echoed


def test_promote_and_rollback_wait_for_the_running_service(
    captured_project: CapturedProject, service: Service
) -> None:
    from nb2prod.lifecycle import promote, rollback
    from nb2prod.render.terminal import switch_lines

    _record(captured_project, service)
    switch = promote(MODEL, "1", settings=captured_project.settings)
    assert [(a.url, a.followed) for a in switch.services] == [(service.url, True)] and not switch.refused
    assert f"service {service.url}: switched" in "\n".join(switch_lines(switch))
    assert service.request("/metadata")[1]["model_version"] == "1"  # already, not "within seconds"
    back = rollback(MODEL, settings=captured_project.settings)
    assert [(a.url, a.followed) for a in back.services] == [(service.url, True)]
    assert service.request("/metadata")[1]["model_version"] == "2"


def test_a_switch_survives_a_restart_while_the_version_loads(
    captured_project: CapturedProject, service: Service, tmp_path: Path
) -> None:
    from nb2prod.lifecycle import promote

    promote(MODEL, "1", settings=captured_project.settings, wait=0)
    try:
        argv = [sys.executable, "-m", "nb2prod", "serve", MODEL, "--port", str(free_port())]
        log = tmp_path / "restart.log"
        with serving(argv, captured_project.env(), log, cwd=captured_project.home, ready=False) as fresh:
            meta = _wait_version(fresh, "1", timeout=60)
            assert meta["control_refusals"] == {}
            assert "active model is now version 1 (control table)" in fresh.log_text()
    finally:
        promote(MODEL, "2", settings=captured_project.settings, wait=0)
        _wait_version(service, "2")


def test_promote_exits_non_zero_naming_the_service_that_refused(
    captured_project: CapturedProject, service: Service, tmp_path: Path
) -> None:
    from nb2prod.export import serve_command
    from nb2prod.lifecycle import promote

    exported = captured_project.data["exported"]
    home = tmp_path / "bentoml"
    shutil.copytree(
        exported.bentoml_home, home, ignore=shutil.ignore_patterns(".staging-*", ".nb2prod-locks")
    )
    version1 = next(p for p in (home / "models" / MODEL).iterdir() if p.name.startswith("v1-"))
    with (version1 / "mlflow" / "model.skops").open("ab") as fh:
        fh.write(b"\0")  # version 1 fails its integrity check in this copy
    cmd = serve_command(MODEL, port=free_port(), settings=captured_project.settings, tag=exported.tag)
    env = dict(cmd.env, BENTOML_HOME=str(home))  # the project's store: it follows the same control table
    with serving(cmd.argv, env, tmp_path / "tampered.log") as tampered:
        _record(captured_project, tampered)
        done = captured_project.cli("promote", MODEL, "1", "--wait", "6")
        try:
            assert done.returncode == 1, (done.stdout, done.stderr)
            assert f"service {tampered.url}: NOT switched: worker" in done.stdout
            assert "integrity check failed" in done.stdout
            assert f"service {service.url}: switched" in done.stdout  # the healthy one did
            assert f"{tampered.url} did not follow it" in done.stderr
            assert tampered.request("/metadata")[1]["model_version"] == "2"
        finally:
            promote(MODEL, "2", settings=captured_project.settings, wait=0)
    _wait_version(service, "2")


def test_history_lists_http_switches_beside_alias_moves(captured_project: CapturedProject) -> None:
    from nb2prod.lifecycle import history
    from nb2prod.lifecycle.switch import SWITCH_EVENT
    from nb2prod.serving.store import Store

    store = Store(str(captured_project.home / ".nb2prod" / "serving" / MODEL / "predictions.db"))
    # the row the service writes for POST /admin/active (template change of issue 12)
    store.add_events(
        [{"kind": SWITCH_EVENT, "model_version": "1", "reason": "POST /admin/active", "field": "active"}]
    )
    store.close()
    events = history(MODEL, settings=captured_project.settings)
    http = [e for e in events if e.actor == "http"]
    assert [(e.alias, e.to_version, e.reason) for e in http] == [
        ("service:active", "1", "POST /admin/active")
    ]
    assert events[-1] is http[0]  # merged in time order: the newest switch is last
    assert any(e.alias == "champion" for e in events)
    done = captured_project.cli("history", MODEL)
    assert (
        done.returncode == 0
        and "service:active" in done.stdout
        and "POST /admin/active (http)" in done.stdout
    )


def test_no_command_prints_the_store_password(
    captured_project: CapturedProject, service: Service, pg_url: str, tmp_path: Path
) -> None:
    import subprocess

    from sqlalchemy.engine import make_url

    password = make_url(pg_url).password
    assert password
    rows = captured_project.data["rows"]
    status, out = service.request("/predict", rows[:2])
    assert status == 200, out
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(f"{o['request_id']},1\n" for o in out))
    env = captured_project.env(NB2PROD_PREDICTION_STORE=pg_url)
    outputs = []
    for args in (["feedback", MODEL, str(labels)], ["monitor", MODEL, "--json"], ["history", MODEL]):
        done = subprocess.run(
            [sys.executable, "-m", "nb2prod", *args],
            cwd=captured_project.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode in (0, 1), (args, done.stdout, done.stderr)
        outputs.append(done.stdout + done.stderr)
    assert "2 labels stored in postgresql+psycopg://" in outputs[0]
    for text in outputs:
        assert password not in text
    assert '"store": "postgresql+psycopg://' in outputs[1] and ":***@" in outputs[1]


def test_feedback_refuses_request_ids_the_service_refuses(
    captured_project: CapturedProject, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\nok-1,1\n../../etc/passwd,0\n")
    done = captured_project.cli("feedback", MODEL, str(labels))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "row 3 of labels.csv: a request id holds only letters, digits" in done.stderr
    assert "Traceback" not in done.stderr


def test_monitor_html_refuses_a_missing_folder_and_creates_nothing(
    captured_project: CapturedProject, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "dir" / "x.html"
    done = captured_project.cli("monitor", MODEL, "--html", str(target))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"the folder {target.parent} does not exist" in done.stderr
    assert not (tmp_path / "missing").exists()
