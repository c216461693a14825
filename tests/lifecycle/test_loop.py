"""The whole loop on a real store, real kernels and a real ``bentoml serve``.

retrain (first champion, a better one promoted and exported, a worse one refused),
serve the Bento (champion + the version it replaced), feedback, monitor (no drift on
held-out rows, drift on an injected covariate shift), fallback to the previous version
when the active one raises, a canary split, and a rollback the live service follows
with no restart (how fast: bench/bench_serve.py --switch, target under 5 s).

The project (``CAPTURE``) and the running service (``nb2prod serve``, with the admin
token) are the shared fixtures of tests/served.py.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import pytest

from tests.helpers import make_notebook, run_notebook
from tests.served import Capture, CapturedProject, Service

pytestmark = pytest.mark.slow

MODEL = "tumor"
TOKEN = "s3cret-admin-token"

# C and how the site encoder treats a site it never saw are parameters: "error" makes a
# model that raises on an unseen site, so the service must answer from the previous version.
NOTEBOOK_CELLS = [
    ('C = 1.0\nunknown = "ignore"\nshift = 0.0', ["parameters"]),
    "%load_ext nb2prod\n%nb2prod start tumor",
    """import json
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

frame = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 3, 20, 21, 22, 23, 30]]
rng = np.random.default_rng(0)
# 30 sites: more than export closes into a category set, so an unseen site reaches the model
frame.insert(0, "site", rng.choice([f"clinic-{i}" for i in range(30)], len(frame)).astype(object))
train, test = train_test_split(frame, test_size=0.3, random_state=42, stratify=frame.target)""",
    "%nb2prod data train --role train --target target\n%nb2prod data test --role test --target target",
    """X = train.drop(columns="target")
pre = ColumnTransformer(
    [("site", OneHotEncoder(handle_unknown=unknown, sparse_output=False), ["site"])], remainder="passthrough"
)
clf = make_pipeline(pre, StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(X, train.target)""",
    "%nb2prod model clf --name tumor",
    """rows = json.loads(test.drop(columns="target").to_json(orient="records"))
with open("heldout.json", "w") as fh:
    json.dump({"rows": rows, "labels": test.target.tolist()}, fh)""",
]


def _capture(project: CapturedProject) -> None:
    """Three retrains: v1 (first champion), v2 (better, promoted, exported), v3 (worse, refused)."""
    notebook = make_notebook(project.home / "notebooks" / "tumor.ipynb", NOTEBOOK_CELLS)
    decisions = {}
    for label, params, code in (
        ("first", ["-p", "C", "0.0005"], 0),
        ("better", ["-p", "C", "1.0", "-p", "unknown", "error"], 0),
        ("worse", ["-p", "C", "0.0001"], 1),
    ):
        done = project.cli("retrain", MODEL, "--notebook", str(notebook), *params, "--no-progress")
        assert done.returncode == code, (label, done.stdout, done.stderr)
        decisions[label] = done.stdout
    project.data.update(
        notebook=notebook,
        decisions=decisions,
        heldout=json.loads((notebook.parent / "heldout.json").read_text()),
    )


CAPTURE = Capture(key="loop", run=_capture)
SERVICE_ENV = {"NB2PROD_ADMIN_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def loop(captured_project: CapturedProject) -> CapturedProject:
    return captured_project


@pytest.fixture(scope="module")
def server(service: Service) -> Service:
    return service


def _predict(server: Service, rows: list[dict[str, Any]], rid: str | None = None) -> list[dict[str, Any]]:
    headers = {"X-Request-ID": rid} if rid else {}
    status, out = server.request("/predict", rows, headers=headers)
    assert status == 200, out
    return out


def test_retrain_promotes_a_better_model_and_refuses_a_worse_one(loop: CapturedProject) -> None:
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    assert loop.data["decisions"]["first"].startswith("PROMOTED: tumor had no champion")
    assert loop.data["decisions"]["better"].startswith("PROMOTED: accuracy")
    assert (
        "carries v2, v1" in loop.data["decisions"]["better"]
        or "exported tumor:v2-" in loop.data["decisions"]["better"]
    )
    assert loop.data["decisions"]["worse"].startswith("REFUSED: accuracy")
    client = tracking.client(loop.settings)
    assert registry.alias_version(client, MODEL, registry.CHAMPION) == "2"
    assert registry.alias_version(client, MODEL, registry.CHALLENGER) is None
    moves = [(e.alias, e.from_version, e.to_version) for e in registry.alias_history(client, MODEL)]
    assert ("champion", None, "1") in moves and ("champion", "1", "2") in moves
    assert not any(alias == "challenger" for alias, _, _ in moves)  # a refused version is not carried
    refused = client.get_model_version(MODEL, "3")
    assert refused.tags["nb2prod.decision"] == "refused"
    decision = tracking.load_json_artifact(client, refused.run_id, "retrain/decision.json")
    assert decision["champion_score"] > decision["challenger_score"] and decision["rows"] == len(
        loop.data["heldout"]["rows"]
    )


def test_service_carries_champion_and_the_version_it_replaced(loop: CapturedProject, server: Service) -> None:
    status, meta = server.request("/metadata")
    assert status == 200
    assert meta["model_version"] == "2" and set(meta["carried_versions"]) == {"2", "1"}
    assert all(v["ready"] for v in meta["carried_versions"].values())
    out = _predict(server, loop.data["heldout"]["rows"][:20])
    assert {o["model_version"] for o in out} == {"2"}


def test_no_drift_on_heldout_rows_then_feedback_gives_live_quality(
    loop: CapturedProject, server: Service
) -> None:
    from sklearn.metrics import accuracy_score

    from nb2prod.lifecycle import monitor

    rows, labels = loop.data["heldout"]["rows"], loop.data["heldout"]["labels"]
    out = []
    for start in range(0, len(rows), 40):
        out += _predict(server, rows[start : start + 40])
    time.sleep(2.5)  # the writer flushes sketches each second
    report = monitor(MODEL, settings=loop.settings)
    assert report.status == "ok", report.drifted
    # nothing drifted: a cron job's retrain --if-drift does nothing (and runs no notebook)
    done = loop.cli("retrain", MODEL, "--notebook", str(loop.data["notebook"]), "--if-drift", "--since", "1h")
    assert done.returncode == 0 and done.stdout.startswith("SKIPPED: no drift"), done.stdout + done.stderr
    # half the labels through the endpoint, half from a CSV through the CLI
    half = len(out) // 2
    body = {
        "labels": [
            {"request_id": o["request_id"], "label": y}
            for o, y in zip(out[:half], labels[:half], strict=False)
        ]
    }
    status, stored = server.request("/feedback", body)
    assert status == 200 and stored["stored"] == half
    csv = loop.home / "labels.csv"
    csv.write_text(
        "request_id,label\n"
        + "".join(f"{o['request_id']},{y}\n" for o, y in zip(out[half:], labels[half:], strict=False))
    )
    done = loop.cli("feedback", MODEL, str(csv))
    assert done.returncode == 0, done.stderr
    assert f"{len(out) - half} labels stored" in done.stdout
    report = monitor(MODEL, settings=loop.settings).to_dict()
    quality = report["quality"]
    want = accuracy_score(labels, [o["prediction"] for o in out])
    assert quality["labelled"] == len(out)
    assert abs(quality["accuracy"] - want) < 1e-9


def test_bad_feedback_is_a_4xx_naming_the_field(server: Service) -> None:
    status, body = server.request("/feedback", {"request_id": "r1", "label": 7})
    assert status == 422 and "label" in json.dumps(body)
    status, body = server.request("/feedback", {"request_id": "r1"})
    assert status == 422 and "label" in json.dumps(body)


def test_drift_on_shifted_rows_and_the_monitor_exit_code(loop: CapturedProject, server: Service) -> None:
    rows = loop.data["heldout"]["rows"]
    shifted = [dict(r, **{"mean radius": r["mean radius"] * 1.6 + 4}) for r in rows]
    for _ in range(3):
        for start in range(0, len(shifted), 40):
            _predict(server, shifted[start : start + 40])
    time.sleep(2.5)
    html = loop.home / "report.html"
    done = loop.cli("monitor", MODEL, "--html", str(html))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "mean radius" in done.stdout
    text = html.read_text()
    assert "<svg" in text and "mean radius" in text
    done = loop.cli("monitor", MODEL, "--json")
    report = json.loads(done.stdout)
    assert "mean radius" in report["drifted"]
    assert "mean texture" not in report["drifted"]
    assert report["source"] == "sketches"  # the service's writer sketched every row


def test_monitor_magic_shows_the_report_in_a_kernel(loop: CapturedProject, server: Service) -> None:
    notebook = make_notebook(
        loop.home / "notebooks" / "watch.ipynb",
        [
            "%load_ext nb2prod\n%nb2prod monitor tumor --since 1h --html watch.html",
            "%nb2prod monitor nobody",
            "%nb2prod export tumor@champion",
        ],
    )
    nb = run_notebook(notebook, loop.home, allow_errors=True)
    shown = nb.cells[0].outputs[0]
    assert shown["output_type"] == "display_data"
    assert "<svg" in shown["data"]["text/html"] and "mean radius" in shown["data"]["text/plain"]
    assert (notebook.parent / "watch.html").read_text().startswith("<!DOCTYPE html>")
    error = "".join(o.get("evalue", "") + "".join(o.get("traceback", [])) for o in nb.cells[1].outputs)
    assert "no Bento of 'nobody'" in error and "most recent call last" not in error
    exported = "".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in nb.cells[2].outputs
    )
    assert "carries v2, v1" in exported, exported


def test_the_previous_version_answers_when_the_active_one_raises(
    loop: CapturedProject, server: Service
) -> None:
    row = dict(loop.data["heldout"]["rows"][0], site="clinic-z")  # v2's encoder raises on an unseen site
    out = _predict(server, [row])
    assert out[0]["model_version"] == "1"
    assert server.request("/metadata")[1]["fallbacks"] == {"2": 1}
    status, text = server.request("/metrics")
    assert status == 200
    assert 'nb2prod_fallback_total{model_version="2"} 1.0' in text


def test_admin_switches_need_the_token(server: Service) -> None:
    body = {"version": "1", "percent": 30}
    assert server.request("/admin/canary", body)[0] == 401
    assert server.request("/admin/canary", body, {"Authorization": "Bearer wrong"})[0] == 401
    status, out = server.request("/admin/active", {"version": "9"}, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 409 and "not in this Bento" in json.dumps(out)


def test_canary_split_is_near_the_asked_share(loop: CapturedProject, server: Service) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, out = server.request("/admin/canary", {"version": "1", "percent": 30}, auth)
    assert status == 200 and out["canary"] == {"version": "1", "percent": 30.0}
    row = loop.data["heldout"]["rows"][1]
    seen = [
        _predict(server, [row], rid=f"canary-{uuid.uuid4().hex[:16]}")[0]["model_version"] for _ in range(300)
    ]
    share = seen.count("1") / len(seen)
    assert 0.22 <= share <= 0.38, share
    status, out = server.request("/admin/canary", {"version": None, "percent": 0}, auth)
    assert status == 200 and out["canary"] is None


def _follows(server: Service, row: dict[str, Any], version: str) -> bool:
    """Whether the running service answers ``row`` with ``version`` before a hang guard runs out.

    How fast it follows is a benchmark target (bench/bench_serve.py --switch), not a test.
    """
    deadline = time.monotonic() + 60
    while _predict(server, [row])[0]["model_version"] != version:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_rollback_switches_the_live_service_without_a_restart(loop: CapturedProject, server: Service) -> None:
    row = loop.data["heldout"]["rows"][2]
    pid = server.proc.pid
    assert _predict(server, [row])[0]["model_version"] == "2"
    done = loop.cli("rollback", MODEL)
    assert done.returncode == 0, done.stderr
    assert "tumor@champion: 2 -> 1" in done.stdout and "follows" in done.stdout
    assert _follows(server, row, "1"), "the service did not follow the rollback"
    done = loop.cli("promote", MODEL, "2")
    assert done.returncode == 0, done.stderr
    assert _follows(server, row, "2"), "the service did not follow the promotion"
    assert server.proc.poll() is None and server.proc.pid == pid  # the same server: no restart
    done = loop.cli("history", MODEL)
    assert "rollback from 2" in done.stdout


def test_score_uses_what_production_answers_with(loop: CapturedProject, server: Service) -> None:
    """``nb2prod score NAME`` scores with the champion (v2), not the newest registered version
    (v3, refused by retrain); ``--bento`` follows the services through a rollback (v1) without
    a rebuild, as the service does; a model without a champion is one error naming the fix."""
    import csv

    import pyarrow.parquet as pq

    source = loop.home / "score-what-serves.csv"
    rows = loop.data["heldout"]["rows"][:20]
    with source.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def versions(*flags: str) -> set[str]:
        out = loop.home / f"scored-{uuid.uuid4().hex[:6]}.parquet"
        done = loop.cli("score", MODEL, str(source), "-o", str(out), "--no-log", *flags)
        assert done.returncode == 0, done.stdout + done.stderr
        return set(pq.read_table(out).column("model_version").to_pylist())

    assert versions() == {"2"}
    assert versions("--bento") == {"2"}
    done = loop.cli("rollback", MODEL)
    assert done.returncode == 0, done.stderr
    try:
        assert versions("--bento") == {"1"}  # the Bento was exported with v2; its services answer with v1
        assert versions() == {"1"}
    finally:
        assert loop.cli("promote", MODEL, "2").returncode == 0
    assert versions("--bento") == {"2"}
    done = loop.cli("score", "nobody", str(source), "-o", str(loop.home / "x.parquet"))
    assert done.returncode == 2 and "no registered model named 'nobody'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_retrain_on_labelled_feedback_refuses_without_the_margin(
    loop: CapturedProject, server: Service
) -> None:
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    done = loop.cli(
        "retrain",
        MODEL,
        "--notebook",
        str(loop.data["notebook"]),
        "-p",
        "C",
        "0.5",
        "--on-feedback",
        "--min-improvement",
        "0.5",
        "--no-progress",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("REFUSED: accuracy") and "labelled feedback" in done.stdout
    client = tracking.client(loop.settings)
    assert registry.alias_version(client, MODEL, registry.CHAMPION) == "2"


def test_lifecycle_errors_are_one_line(loop: CapturedProject) -> None:
    done = loop.cli("promote", MODEL, "42")
    assert done.returncode == 2 and "no version 42" in done.stderr and "Traceback" not in done.stderr
    done = loop.cli("rollback", MODEL, "--to", "2")
    assert done.returncode == 2 and "champion already" in done.stderr
    done = loop.cli("rollback", "nobody")  # not "nobody has no champion": there is no such model
    assert done.returncode == 2 and "no registered model named 'nobody'" in done.stderr, done.stderr
    bad = loop.home / "bad.csv"
    bad.write_text("request_id,label\nr1,7\n")
    done = loop.cli("feedback", MODEL, str(bad))
    assert done.returncode == 2 and "row 2" in done.stderr and "not a class" in done.stderr
    done = loop.cli("monitor", MODEL, "--since", "yesterday-ish")
    assert done.returncode == 2 and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- calibration, batch, trace


def test_the_bento_carries_each_versions_calibration_and_batch_rows_are_their_own_traffic_line(
    loop: CapturedProject, server: Service
) -> None:
    """The calibration fitted at capture on the tracked test set travels into the manifest; a batch
    scored with nb2prod score shows as ``batch`` beside the ``online`` traffic."""
    import csv

    from nb2prod.lifecycle import served_manifest

    _, manifest = served_manifest(loop.settings, MODEL)
    for version in ("2", "1"):
        calibration = manifest.models[version].calibration
        assert calibration is not None and calibration["classes"] == ["0", "1"], version
        assert 0.5 < calibration["accuracy"] <= 1.0 and calibration["rows"] > 100
    rows = loop.data["heldout"]["rows"][:60]
    source = loop.home / "batch.csv"
    with source.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = loop.cli("score", f"{MODEL}@champion", str(source), "-o", str(loop.home / "scored.parquet"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = loop.cli("monitor", MODEL, "--json")
    report = json.loads(done.stdout)
    assert sum(report["traffic"]["batch"].values()) == 60
    assert sum(report["traffic"]["online"].values()) > 60
    assert "batch" in loop.cli("monitor", MODEL).stdout


def _store_rows(loop: CapturedProject) -> list[tuple[str, float, str, str]]:
    """(request id, time, source, version) of every logged row: the service's, and the batch's
    rows in their chunks (ids ``<batch id>-<row>``)."""
    from nb2prod.batch import rows as batch_rows
    from nb2prod.lifecycle import store_location
    from nb2prod.serving.store import Store

    store = Store(store_location(loop.settings, MODEL), readonly=True)
    try:
        online = [
            (str(r), float(t), str(m), str(v))
            for r, t, m, v in store.query("SELECT request_id, ts, monitor, model_version FROM predictions")
        ]
        batch = [
            (f"{chunk.batch_id}-{row}", chunk.ts, "batch", chunk.version)
            for chunk, table in batch_rows.scan(store, None, math.inf)
            for row in table.column(batch_rows.ROW).to_pylist()
        ]
        return online + batch
    finally:
        store.close()


def test_trace_follows_served_promoted_rolled_back_and_batch_rows_to_the_notebook(
    loop: CapturedProject, server: Service
) -> None:
    import random

    from nb2prod.lifecycle.trace import trace
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    rows = _store_rows(loop)
    client = tracking.client(loop.settings)
    events = registry.alias_history(client, MODEL, registry.CHAMPION)
    rolled_back = next(e for e in events if e.reason.startswith("rollback"))
    picks: dict[str, tuple[str, str]] = {}  # what -> (request id, expected route)
    rng = random.Random(7)
    champion_rows = [r for r in rows if r[2] != "batch" and r[3] == "2" and not r[0].startswith("canary-")]
    picks["champion"] = (rng.choice(champion_rows)[0], "champion")
    picks["canary"] = (
        rng.choice([r for r in rows if r[0].startswith("canary-") and r[3] == "1"])[0],
        "canary",
    )
    picks["batch"] = (rng.choice([r for r in rows if r[2] == "batch"])[0], "batch")
    after = [r for r in rows if r[2] != "batch" and r[3] == "1" and not r[0].startswith("canary-")]
    rolled = [r for r in after if r[1] >= _epoch(rolled_back.at)]
    picks["rolled back"] = (rng.choice(rolled)[0], "champion")
    fallback = [r for r in after if r[1] < _epoch(rolled_back.at)]
    picks["fallback"] = (fallback[0][0], "fallback")  # the unseen-site row answered by v1
    for what, (rid, route) in picks.items():
        found = trace(MODEL, rid, settings=loop.settings)
        assert found.ok, (what, [link for link in found.broken])
        assert found.route == route, (what, found.route, found.active_then)
        assert found.bento is not None and found.bento.startswith("tumor:v2-")
        assert found.bento_digest is not None and found.bento_digest[7:19] == found.bento.split("-")[-1]
        assert found.run["notebook"] and found.run["notebook"].endswith("tumor.ipynb")
        assert found.run["notebook_digest"].startswith("sha256:") and found.run["env_digest"]
        assert {"X", "y", "train", "test"} <= set(found.run["data_digests"])
        checked = {link.name for link in found.links if link.ok}
        assert {
            "bento source",
            "bento model files",
            "capture record",
            "mlflow model files",
            "environment",
        } <= checked
        assert {"data digest of 'train'", "data rows of 'test'"} <= checked
    assert any(e.reason.startswith("rollback") for e in trace(MODEL, picks["rolled back"][0]).history)
    done = loop.cli("trace", MODEL, picks["batch"][0], "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["row"]["source"] == "batch"
    done = loop.cli("trace", MODEL, "no-such-request")
    assert (
        done.returncode == 2
        and "no prediction with request id" in done.stderr
        and "Traceback" not in done.stderr
    )


def _epoch(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at).timestamp()


def test_trace_names_the_broken_link_when_any_artifact_is_tampered_with(
    loop: CapturedProject, server: Service
) -> None:
    """Tamper with each artifact of the chain in turn (then restore it): the trace names it."""
    import shutil
    import urllib.parse
    from pathlib import Path

    import pandas as pd

    from nb2prod.lifecycle.trace import trace
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import names

    rid = next(r[0] for r in _store_rows(loop) if r[3] == "2" and r[2] != "batch")
    assert trace(MODEL, rid).ok
    client = tracking.client(loop.settings)
    mv = client.get_model_version(MODEL, "2")
    run_id = mv.tags[names.TAG_RUN_ID]

    def local(uri: str) -> Path:
        return Path(urllib.parse.urlparse(uri).path) if uri.startswith("file:") else Path(uri)

    found = trace(MODEL, rid)
    assert found.bento is not None
    bname, bversion = found.bento.split(":")
    bento_home = loop.settings.bentoml_home
    model_dir = next((bento_home / "models" / bname).glob("v2-*/mlflow"))
    artifacts = local(client.get_run(run_id).info.artifact_uri)
    logged = local(client.get_logged_model(mv.tags[names.TAG_MODEL_ID]).artifact_location)

    def first_file(folder: Path) -> Path:
        return next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".yaml")

    def append_byte(path: Path) -> None:
        path.write_bytes(path.read_bytes() + b"\0")

    def edit_manifest(path: Path) -> None:
        data = json.loads(path.read_text())
        data["reference_rows"] = (data.get("reference_rows") or 0) + 1
        path.write_text(json.dumps(data))

    def edit_environment(path: Path) -> None:
        data = json.loads(path.read_text())
        data["python_version"] = "2.7.18"
        path.write_text(json.dumps(data))

    def edit_rows(path: Path) -> None:
        frame = pd.read_parquet(path)
        frame.iloc[0, 1] = frame.iloc[0, 1] + 1
        frame.to_parquet(path)

    files: list[tuple[str, Path, Any, str]] = [
        ("a model file in the BentoML store", first_file(model_dir), append_byte, "bento model files"),
        (
            "the Bento's manifest",
            bento_home / "bentos" / bname / bversion / "src" / "nb2prod_manifest.json",
            edit_manifest,
            "bento source",
        ),
        ("the logged model's file in MLflow", first_file(logged), append_byte, "mlflow model files"),
        ("the run's environment.json", artifacts / names.ENVIRONMENT_JSON, edit_environment, "environment"),
        ("the stored test rows", artifacts / names.dataset_rows("test"), edit_rows, "data rows of 'test'"),
    ]
    for what, path, tamper, link in files:
        saved = path.with_name(path.name + ".saved")
        shutil.copy2(path, saved)
        try:
            tamper(path)
            broken = {b.name: b for b in trace(MODEL, rid).broken}
            assert link in broken, (what, list(broken))
            named = broken[link]
            assert named.artifact and (path.name in named.artifact or path.name in named.detail), (
                what,
                named,
            )
        finally:
            shutil.move(saved, path)
    # tags: the capture's sha256 on the registered version, a data digest on the run
    rel = names.TAG_ARTIFACT_SHA256  # the digest naming the capture's record of every model file's sha256
    tags = [
        ("model version", names.TAG_ARTIFACT_SHA256, "sha256:" + "0" * 64, "capture record"),
        ("run", names.data_digest_tag("train"), "xxh3_128:" + "0" * 32, "data digest of 'train'"),
    ]
    for where, key, value, link in tags:
        old = mv.tags[key] if where == "model version" else client.get_run(run_id).data.tags[key]
        setter = (
            (lambda v, key=key: client.set_model_version_tag(MODEL, "2", key, v))
            if where == "model version"
            else (lambda v, key=key: client.set_tag(run_id, key, v))
        )
        setter(value)
        try:
            broken = {b.name: b for b in trace(MODEL, rid).broken}
            assert link in broken, (key, list(broken))
            named = broken[link]
            assert key in (named.artifact or "") or rel in (named.artifact or ""), named
            assert "0" * 32 in str(named.expected) + str(named.actual), named
        finally:
            setter(old)
    assert trace(MODEL, rid).ok  # everything restored
    done = loop.cli("trace", MODEL, rid)
    assert done.returncode == 0 and "chain verified" in done.stdout, done.stdout
