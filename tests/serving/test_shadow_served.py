"""Shadow scoring in a real ``nb2prod serve`` of a Bento carrying two versions.

The notebook is the ``regions`` one of tests/lifecycle/test_switch_service.py (versions 1 and
2 registered, run in a real kernel); the Bento of version 2 carries 1. ``POST /admin/shadow`` starts version 1
as the shadow: every answered row is scored by it off the request path and logged with the
same request id, ``monitor`` = ``shadow``; the answers stay version 2's.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_notebook, run_notebook
from tests.lifecycle.test_switch_service import CELLS
from tests.served import Capture, CapturedProject, Service, free_port, serving

pytestmark = pytest.mark.slow

MODEL = "regions"


def _capture(project: CapturedProject) -> None:
    from nb2prod.export import export_model

    notebook = make_notebook(project.home / "notebooks" / "regions.ipynb", CELLS)
    run_notebook(notebook, project.home)
    project.data["exported"] = export_model(f"{MODEL}/2", settings=project.settings, with_versions=["1"])
    project.data["rows"] = json.loads((notebook.parent / "rows.json").read_text())


CAPTURE = Capture(key="shadow-regions", run=_capture)
TOKEN = "shadow-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
REQUESTS = 30


@pytest.fixture(scope="module")
def shadowed(
    captured_project: CapturedProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The champion's Bento served with its own store and an admin token."""
    store = tmp_path_factory.mktemp("shadow") / "predictions.db"
    argv = [sys.executable, "-m", "nb2prod", "serve", MODEL, "--port", str(free_port())]
    env = captured_project.env(NB2PROD_ADMIN_TOKEN=TOKEN, NB2PROD_PREDICTION_STORE=str(store))
    with serving(argv, env, store.parent / "serve.log", cwd=captured_project.home) as srv:
        srv.store = store
        yield srv


def _rows(store: Path | None, prefix: str) -> list[tuple[str, str, str, Any]]:
    assert store is not None
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        found = conn.execute(
            "SELECT request_id, monitor, model_version, prediction FROM predictions WHERE request_id LIKE ?",
            (f"{prefix}%",),
        ).fetchall()
    except sqlite3.OperationalError:  # the writer has not created the table yet
        return []
    finally:
        conn.close()
    return [(str(r), str(m), str(v), json.loads(p)["prediction"]) for r, m, v, p in found]


def _predict(service: Service, rows: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    status, raw, _ = service.post("/predict", json.dumps(rows).encode(), headers={"X-Request-Id": request_id})
    assert status == 200, raw
    out: list[dict[str, Any]] = json.loads(raw)
    return out


def _wait(store: Path | None, prefix: str, n: int, timeout: float = 30) -> list[tuple[str, str, str, Any]]:
    deadline = time.monotonic() + timeout
    rows = _rows(store, prefix)
    while len(rows) < n and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = _rows(store, prefix)
    return rows


def test_the_shadow_logs_every_answered_row_beside_it_and_never_answers(
    captured_project: CapturedProject, shadowed: Service
) -> None:
    rows = captured_project.data["rows"]
    champion = _predict(shadowed, rows, "before")
    assert {a["model_version"] for a in champion} == {"2"}

    # refused: no token, the active version, a version the Bento does not carry
    assert shadowed.request("/admin/shadow", {"version": "1"})[0] == 401
    assert shadowed.request("/admin/shadow", {"version": "2"}, headers=ADMIN)[0] == 409
    status, out = shadowed.request("/admin/shadow", {"version": "7"}, headers=ADMIN)
    assert status == 409 and "not in this Bento" in out["message"]
    assert shadowed.request("/metadata")[1]["shadow"] is None

    status, out = shadowed.request("/admin/shadow", {"version": "1"}, headers=ADMIN)
    assert status == 200 and out["shadow"] == {"version": "1"} and out["active"] == "2", out
    for k in range(REQUESTS):
        answers = _predict(shadowed, rows, f"shadow-{k}")
        # the answers are the champion's, whatever the shadow says
        assert [(a["model_version"], a["prediction"]) for a in answers] == [
            ("2", a["prediction"]) for a in champion
        ]
    n = REQUESTS * len(rows)
    logged = _wait(shadowed.store, "shadow-", 2 * n)
    answered = {(r, v) for r, m, v, _ in logged if m != "shadow"}
    shadow = {r: (v, p) for r, m, v, p in logged if m == "shadow"}
    assert len(logged) == 2 * n, f"{len(logged)} rows logged for {n} answered rows"
    assert {r for r, _ in answered} == set(shadow) and {v for _, v in answered} == {"2"}
    assert {v for v, _ in shadow.values()} == {"1"}

    # the shadow rows are version 1's own answers: what it answers once it is the active one
    status, out = shadowed.request("/admin/active", {"version": "1"}, headers=ADMIN)
    assert status == 200 and out["shadow"] is None, out  # promoted: nothing left to shadow
    as_active = _predict(shadowed, rows, "as-active")
    assert {a["model_version"] for a in as_active} == {"1"}
    for k in range(REQUESTS):
        for i, answer in enumerate(as_active):
            assert shadow[f"shadow-{k}-{i}"][1] == answer["prediction"]

    meta = shadowed.request("/metadata")[1]
    assert meta["shadow"]["scored"] == n and meta["shadow"]["dropped"] == {}, meta["shadow"]
    metrics = shadowed.get("/metrics")[1].decode()
    assert 'nb2prod_shadow_scored_total{model_version="1"}' in metrics
    assert 'nb2prod_shadow_dropped_total{reason="queue_full"} 0.0' in metrics

    # back to 2 with the shadow stopped: answered rows only
    assert shadowed.request("/admin/active", {"version": "2"}, headers=ADMIN)[0] == 200
    status, out = shadowed.request("/admin/shadow", {"version": None}, headers=ADMIN)
    assert status == 200 and out["shadow"] is None
    _predict(shadowed, rows, "after")
    assert len(_wait(shadowed.store, "after", len(rows))) == len(rows)
    time.sleep(1.0)  # a shadow row would be logged by now (the shadow thread lingers 50 ms)
    after = _rows(shadowed.store, "after")
    assert len(after) == len(rows) and all(m != "shadow" for _, m, _, _ in after)
