"""The runner's SQLite path against MLflow itself: the same calls through ``SqliteRunStore`` and
through ``MlflowRunStore`` (an ``MlflowClient``) must leave the same rows and files, read back the
same through MLflow, and ``open`` must refuse every store it was not written for."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nb2prod.config import load_settings
from nb2prod.tracking import client as tracking
from nb2prod.tracking import names, runstore
from nb2prod.tracking.runstore import MlflowRunStore, SqliteRunStore, open_run_store

TAGS = {
    "nb2prod.kind": "run",
    "nb2prod.notebook": "/p/train.ipynb",
    "mlflow.source.name": "/p/train.ipynb",
    "mlflow.source.type": "NOTEBOOK",
    "nb2prod.source_digest": "0" * 64,
}
PARAMS = {"C": "0.5", "penalty": "l2", "grid": '[1, 2, "a"]'}


def _db(project: Path) -> Path:
    return project / ".nb2prod" / "mlflow.db"


def _stores(project: Path, experiment: str = "contract") -> tuple[MlflowRunStore, SqliteRunStore]:
    settings = load_settings(project)
    client = tracking.client(settings)
    experiment_id = tracking.ensure_experiment(settings, client, experiment)
    fast = SqliteRunStore.open(settings, experiment)
    assert fast is not None, "the project's fresh store should take the SQLite path"
    assert fast.experiment_id == experiment_id
    return MlflowRunStore(client, experiment_id), fast


def _record(store: runstore.RunStore, source: Path, status: str) -> str:
    run_id = store.create_run(TAGS)
    store.log_params(run_id, PARAMS)
    store.log_params(run_id, {"C": "0.5"})  # the same value again is allowed, as in MLflow
    runstore.log_json(store, run_id, {"b": 1, "a": [1, 2]}, "nb2prod/params.json")
    store.log_file(run_id, source, "notebook/source.ipynb")
    store.log_text(run_id, "<html>é</html>", "top.html")
    # set_tag cuts a value at MLflow's 8,000 characters; the SQLite path does the same.
    store.set_tags(run_id, {"nb2prod.notebook": "/p/other.ipynb", "nb2prod.failure": "x" * 9000})
    store.terminate(run_id, status)
    return run_id


def _rows(db: Path, run_id: str) -> dict[str, Any]:
    con = sqlite3.connect(str(db))
    try:
        run = con.execute(
            "SELECT name, source_type, source_name, entry_point_name, user_id, status, start_time,"
            " end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time"
            " FROM runs WHERE run_uuid = ?",
            (run_id,),
        ).fetchone()
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
    finally:
        con.close()
    (name, *rest) = run
    fields = dict(
        zip(
            [
                "source_type",
                "source_name",
                "entry_point_name",
                "user_id",
                "status",
                "start_time",
                "end_time",
                "source_version",
                "lifecycle_stage",
                "artifact_uri",
                "experiment_id",
                "deleted_time",
            ],
            rest,
            strict=True,
        )
    )
    return {"name": name, "fields": fields, "tags": tags, "params": params}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sqlite_path_writes_what_mlflow_writes(project: Path, client: Any) -> None:
    slow, fast = _stores(project)
    source = project / "train.ipynb"
    source.write_text('{"cells": []}', encoding="utf-8")
    by_mlflow = _record(slow, source, "FINISHED")
    by_sqlite = _record(fast, source, "FINISHED")

    a, b = _rows(_db(project), by_mlflow), _rows(_db(project), by_sqlite)
    assert a["params"] == b["params"] == PARAMS
    # The run name MLflow makes up is random; ours is the notebook's stem and the id's head.
    assert b["name"] == f"train-{by_sqlite[:6]}" and b["tags"].pop("mlflow.runName") == b["name"]
    assert a["tags"].pop("mlflow.runName") == a["name"]
    assert a["tags"] == b["tags"]
    assert len(b["tags"]["nb2prod.failure"]) == 8000
    for row, run_id in ((a, by_mlflow), (b, by_sqlite)):
        assert row["fields"]["artifact_uri"].endswith(f"/{run_id}/artifacts")
        assert row["fields"]["end_time"] >= row["fields"]["start_time"] > 0
        for key in ("artifact_uri", "start_time", "end_time"):
            row["fields"].pop(key)
    assert a["fields"] == b["fields"]

    # Read back through MLflow: the same run, the same artifacts byte for byte.
    got_a, got_b = client.get_run(by_mlflow), client.get_run(by_sqlite)
    assert got_b.info.status == "FINISHED" and got_b.info.lifecycle_stage == "active"
    assert got_a.data.params == got_b.data.params
    assert {k: v for k, v in got_a.data.tags.items() if k != "mlflow.runName"} == {
        k: v for k, v in got_b.data.tags.items() if k != "mlflow.runName"
    }
    folder_a = Path(client.download_artifacts(by_mlflow, "", str(project / "a")))
    folder_b = Path(client.download_artifacts(by_sqlite, "", str(project / "b")))
    assert _files(folder_a) == _files(folder_b)
    assert set(_files(folder_b)) == {"nb2prod/params.json", "notebook/source.ipynb", "top.html"}
    assert fast.load_json(by_sqlite, "nb2prod/params.json") == {"a": [1, 2], "b": 1}
    for store, run_id in ((slow, by_mlflow), (fast, by_sqlite)):
        assert store.has_artifact(run_id, "top.html")
        assert store.has_artifact(run_id, "notebook/source.ipynb")
        assert not store.has_artifact(run_id, "environment.json")
        assert store.has_artifacts_under(run_id, "notebook")
        assert not store.has_artifacts_under(run_id, "registry")


def test_outcome_and_last_finished_run_agree_with_mlflow(project: Path, client: Any) -> None:
    slow, fast = _stores(project)
    other_slow, other_fast = _stores(project, "other-experiment")
    source = project / "train.ipynb"
    source.write_text("{}", encoding="utf-8")
    assert fast.last_finished_run("/p/other.ipynb") is None
    first = _record(fast, source, "FINISHED")
    failed = _record(slow, source, "FAILED")
    assert fast.last_finished_run("/p/other.ipynb") == slow.last_finished_run("/p/other.ipynb") == first
    newest = _record(other_fast, source, "FINISHED")  # another experiment of the same store counts
    assert (
        fast.last_finished_run("/p/other.ipynb") == other_slow.last_finished_run("/p/other.ipynb") == newest
    )
    client.delete_run(newest)
    assert fast.last_finished_run("/p/other.ipynb") == slow.last_finished_run("/p/other.ipynb") == first
    assert failed != first

    run_id = fast.create_run(TAGS)
    client.log_metric(run_id, "accuracy", 0.5)
    client.log_metric(run_id, "accuracy", 0.75, step=1)
    client.log_metric(run_id, "loss", math.nan)
    metrics, tags = fast.outcome(run_id)
    assert metrics["accuracy"] == slow.outcome(run_id)[0]["accuracy"] == 0.75
    assert math.isnan(metrics["loss"])
    assert tags == slow.outcome(run_id)[1]


def test_sqlite_path_refuses_what_mlflow_would_refuse(project: Path) -> None:
    _, fast = _stores(project)
    run_id = fast.create_run(TAGS)
    fast.log_params(run_id, {"C": "0.5"})
    with pytest.raises(ValueError, match="changing param values"):
        fast.log_params(run_id, {"C": "1.0"})
    with pytest.raises(ValueError, match="invalid artifact path"):
        fast.log_text(run_id, "x", "../outside.txt")
    with pytest.raises(ValueError, match="not a final run status"):
        fast.terminate(run_id, "RUNNING")
    with pytest.raises(LookupError):
        fast.set_tags("0" * 32, {"a": "b"})


def test_open_takes_the_mlflow_path_for_any_other_store(project: Path, tmp_path: Path) -> None:
    settings = load_settings(project)
    tracking.ensure_experiment(settings, tracking.client(settings), "contract")
    assert SqliteRunStore.open(settings, "contract") is not None
    assert SqliteRunStore.open(settings, "no-such-experiment") is None  # MLflow creates it

    def variant(name: str, sql: str) -> Any:
        db = tmp_path / name / "mlflow.db"
        db.parent.mkdir()
        shutil.copy(_db(project), db)
        con = sqlite3.connect(str(db))
        with con:
            con.execute(sql)
        con.close()
        return load_settings(project, tracking_uri=f"sqlite:///{db}")

    newer = variant("newer", "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert SqliteRunStore.open(newer, "contract") is None
    deleted = variant("deleted", "UPDATE experiments SET lifecycle_stage = 'deleted' WHERE name = 'contract'")
    assert SqliteRunStore.open(deleted, "contract") is None
    remote = variant(
        "remote", "UPDATE experiments SET artifact_location = 's3://bucket/x' WHERE name = 'contract'"
    )
    assert SqliteRunStore.open(remote, "contract") is None
    missing = load_settings(project, tracking_uri=f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    assert SqliteRunStore.open(missing, "contract") is None
    server = load_settings(project, tracking_uri="http://127.0.0.1:5000")
    assert SqliteRunStore.open(server, "contract") is None


def test_open_run_store_decides_between_the_sqlite_path_and_mlflow(project: Path, client: Any) -> None:
    settings = load_settings(project)
    tracking.ensure_experiment(settings, tracking.client(settings), "contract")
    fast = open_run_store(settings, "contract")
    assert isinstance(fast, SqliteRunStore)
    # A new experiment: MLflow creates it, and the store is MLflow's.
    slow = open_run_store(settings, "brand-new")
    assert isinstance(slow, MlflowRunStore)
    assert client.get_experiment_by_name("brand-new").experiment_id == slow.experiment_id
    # Once it exists, the same experiment takes the SQLite path.
    again = open_run_store(settings, "brand-new")
    assert isinstance(again, SqliteRunStore) and again.experiment_id == slow.experiment_id


def test_local_path() -> None:
    assert runstore.local_path("file:///tmp/a%20b/x") == Path("/tmp/a b/x")
    assert runstore.local_path("/tmp/a") == Path("/tmp/a")
    assert runstore.local_path("s3://bucket/a") is None
    assert runstore.local_path("mlflow-artifacts:/1/x") is None


def test_a_plain_notebook_runs_without_importing_mlflow_in_the_runner(project: Path, client: Any) -> None:
    """nb2prod run of a notebook that never names nb2prod, on the default store, records the whole
    run through the SQLite path: the runner process never imports mlflow (~5 CPU s), and MLflow
    reads the run back complete."""
    import json
    import os
    import subprocess
    import sys

    from nb2prod.tracking.names import (
        CANDIDATES_DIR,
        EXECUTED_ARTIFACT,
        HTML_ARTIFACT,
        PARAMS_ARTIFACT,
        SOURCE_ARTIFACT,
    )
    from tests.helpers import make_notebook

    nb = make_notebook(project / "plain.ipynb", [("a = 1", ["parameters"]), "b = a * 2\nprint(b)"])
    settings = load_settings(project)
    tracking.ensure_experiment(settings, tracking.client(settings), settings.experiment)
    code = (
        "import json, sys\n"
        "from nb2prod.execute import run_notebook\n"
        f"r = run_notebook({str(nb)!r}, {{'a': 21}}, progress=False)\n"
        "print(json.dumps({'run_id': r.run_id, 'status': r.status, 'mlflow': 'mlflow' in sys.modules,"
        " 'sqlalchemy': 'sqlalchemy' in sys.modules}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ, cwd=project
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "FINISHED"
    assert out["mlflow"] is False and out["sqlalchemy"] is False

    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.data.params == {"a": "21"}
    assert run.data.tags["nb2prod.notebook"] == str(nb)
    listed = {f.path for f in client.list_artifacts(out["run_id"], "notebook")}
    assert {EXECUTED_ARTIFACT, SOURCE_ARTIFACT, HTML_ARTIFACT} <= listed
    folder = Path(client.download_artifacts(out["run_id"], "", str(project / "got")))
    executed = json.loads((folder / EXECUTED_ARTIFACT).read_text(encoding="utf-8"))
    assert any("42" in "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert json.loads((folder / PARAMS_ARTIFACT).read_text(encoding="utf-8")) == {"a": 21}
    assert (folder / names.ENVIRONMENT_JSON).is_file()
    assert not (folder / CANDIDATES_DIR).exists()
