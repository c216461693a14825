"""The prediction store on both backends (SQLite, and a real PostgreSQL server: tests/pg.py),
and where a service logs by default."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring.stores import T0, breast_cancer, held_out_store


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return breast_cancer()


def test_the_service_writer_logs_rows_and_events(location: str) -> None:
    from nb2prod.serving.monitor import _Writer, recent
    from nb2prod.serving.store import Store

    writer = _Writer(location, maxsize=100, on_drop=None, on_write=None)
    for i in range(7):
        writer.put((f"r{i}", float(i), "m", "1", json.dumps({"x": i}), json.dumps({"prediction": i % 2})))
    writer.put_event({"kind": "invalid", "reason": "missing_field", "field": "x"})
    writer.close()
    assert writer.written == 7 and writer.dropped == 0
    assert [json.loads(f)["x"] for f, _ in recent(location, 5)] == [6, 5, 4, 3, 2]
    store = Store(location)
    assert store.query("SELECT kind, reason, field FROM events") == [("invalid", "missing_field", "x")]
    assert store.known_request_ids(["r0", "r6", "nope"]) == {"r0", "r6"}
    store.close()


def test_feedback_control_and_sketches_upsert(location: str) -> None:
    from nb2prod.serving.store import SQL_UPSERT_SKETCH, Store

    store = Store(location)
    assert store.add_feedback([("a", 1), ("b", "yes")], source="file:x.csv", ts=1.0) == 2
    store.add_feedback([("a", 0)], source="api", ts=2.0)  # a later label never overwrites the first
    assert sorted(store.query("SELECT request_id, label, source FROM feedback")) == [
        ("a", "1", "file:x.csv"),
        ("b", '"yes"', "file:x.csv"),
    ]
    store.set_control("active", "3", ts=10.0)
    store.set_control("canary", {"version": "4", "percent": 10.0}, ts=11.0)
    store.set_control("active", "2", ts=12.0)
    assert store.control() == {"active": ("2", 12.0), "canary": ({"version": "4", "percent": 10.0}, 11.0)}
    blob = bytes(range(256)) * 3  # binary counts round-trip byte for byte (BLOB / BYTEA)
    row = {"bucket": 60, "model_version": "1", "col": "x", "writer": "w", "n": 5, "counts": blob}
    store.write(SQL_UPSERT_SKETCH, [row])
    store.write(SQL_UPSERT_SKETCH, [{**row, "n": 9}])
    assert [(n, bytes(c)) for n, c in store.query("SELECT n, counts FROM sketches")] == [(9, blob)]
    store.close()


def test_the_monitor_report_reads_the_same_from_both_backends(
    data: dict[str, Any], tmp_path: Path, pg_fresh: Callable[[str], str]
) -> None:
    """Sketches, the feedback join and events grouped: one report, whichever backend holds the rows."""
    from nb2prod.monitoring.report import build_report

    reports = {}
    for backend, where in (("sqlite", str(tmp_path / "p.db")), ("postgresql", pg_fresh("report"))):
        logged = held_out_store(where, data)
        reports[backend] = build_report(where, data["manifest"], until=T0 + 86_400)
    lite, pg = reports["sqlite"], reports["postgresql"]
    assert pg.rows == lite.rows == len(data["held"])
    assert pg.source == lite.source == "sketches"
    assert pg.quality["labelled"] == lite.quality["labelled"] == len(logged["labelled"])
    assert pg.quality["accuracy"] == lite.quality["accuracy"]
    assert pg.events == lite.events and pg.events["invalid"]["total"] == 2
    for feature in data["features"]:
        assert pg.features[feature].psi == pytest.approx(lite.features[feature].psi, rel=1e-12)


def test_bulk_inserted_predictions_read_like_the_services_rows(location: str) -> None:
    """A batch's bulk path (one prepared statement on SQLite, COPY on PostgreSQL) stores the same
    rows as the service's writer: text with quotes, tabs, backslashes and newlines intact."""
    from nb2prod.serving.store import BULK_ROWS, Store

    store = Store(location)
    total = BULK_ROWS + 10  # more than one SQLite transaction
    ids = [f"b1-{i}" for i in range(total)]
    features = [json.dumps({"x": i, "note": 'a\tb\\c\n"q"'}) for i in range(total)]
    predictions = [json.dumps({"prediction": f"class {i % 3}"}) for i in range(total)]
    n = store.insert_predictions(ids, features, predictions, ts=5.0, monitor="batch", model_version="2")
    assert (
        n == total and store.insert_predictions([], [], [], ts=5.0, monitor="batch", model_version="2") == 0
    )
    rows = store.query("SELECT request_id, ts, monitor, model_version, features, prediction FROM predictions")
    assert sorted(rows, key=lambda r: int(r[0][3:])) == [
        (i, 5.0, "batch", "2", f, p) for i, f, p in zip(ids, features, predictions, strict=True)
    ]
    assert json.loads(rows[0][4])["note"] == 'a\tb\\c\n"q"'
    with pytest.raises(ValueError, match="1 request ids, 2 features"):
        store.insert_predictions(["x"], ["{}", "{}"], ["{}"], ts=1.0, monitor="batch", model_version="2")
    assert store.known_request_ids(["b1-0", f"b1-{total - 1}", "x"]) == {"b1-0", f"b1-{total - 1}"}
    store.close()


def test_a_postgresql_url_without_psycopg_names_the_extra() -> None:
    """Without the driver, the store says what to install (before any connection is tried)."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if psycopg were not installed
        "from nb2prod.serving.store import Store, PredictionStoreError\n"
        "try:\n"
        "    Store('postgresql+psycopg://u:s3cret@127.0.0.1:1/db')\n"
        "except PredictionStoreError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "pip install 'nb2prod[postgres]'" in out.stdout
    assert "psycopg" in out.stdout and "s3cret" not in out.stdout


def test_an_unsupported_url_is_refused_with_the_forms_that_work() -> None:
    from nb2prod.serving.store import PredictionStoreError, Store

    with pytest.raises(PredictionStoreError, match="postgresql\\+psycopg://USER") as err:
        Store("mysql://u:s3cret@db/p")
    assert "s3cret" not in str(err.value) and "u:***@db" in str(err.value)


def test_one_default_for_where_a_service_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service (no nb2prod) and nb2prod (serve, monitor) compute the same place."""
    from nb2prod.config import Settings
    from nb2prod.export.serve import serve_command
    from nb2prod.serving.store import STORE_ENV, prediction_store

    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    settings = Settings(home=tmp_path, tracking_uri="sqlite:///x.db")
    in_project = str(tmp_path.resolve() / ".nb2prod" / "serving" / "Churn" / "predictions.db")
    assert prediction_store("Churn", settings.bentoml_home) == in_project
    # inside the Bento: BENTOML_HOME is all it knows
    monkeypatch.setenv("BENTOML_HOME", str(settings.bentoml_home))
    assert prediction_store("Churn") == in_project
    monkeypatch.delenv("BENTOML_HOME")
    assert prediction_store("Churn") == str((Path.home() / "serving" / "Churn" / "predictions.db").resolve())
    # the variable wins everywhere; a relative path is made absolute, a URL kept as it is
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STORE_ENV, "logs/p.db")
    assert prediction_store("Churn", settings.bentoml_home) == str(tmp_path.resolve() / "logs" / "p.db")
    monkeypatch.setenv(STORE_ENV, "postgresql://db/predictions")
    assert prediction_store("Churn") == "postgresql://db/predictions"
    # nb2prod serve hands the same location to the service
    monkeypatch.delenv(STORE_ENV)
    cmd = serve_command("Churn", port=1234, settings=settings, tag="churn:v1-abc")
    assert cmd.prediction_store == in_project == cmd.env[STORE_ENV]
    assert cmd.env["BENTOML_HOME"] == str(settings.bentoml_home)


def test_in_a_container_the_store_lives_under_the_bentoml_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bentoml containerize` sets BENTOML_HOME=/home/bentoml/ and BENTOML_CONTAINERIZED=true: the
    parent of the home (/home) is root's, so the store goes inside the home the service's user owns."""
    from nb2prod.serving.store import STORE_ENV, Store, prediction_store, serving_dir

    monkeypatch.delenv(STORE_ENV, raising=False)
    home = tmp_path / "home" / "bentoml"
    home.mkdir(parents=True)
    monkeypatch.setenv("BENTOML_HOME", str(home) + "/")
    monkeypatch.setenv("BENTOML_CONTAINERIZED", "true")
    assert prediction_store("Churn") == str(home.resolve() / "serving" / "Churn" / "predictions.db")
    assert serving_dir() == home.resolve() / "serving"
    store = Store(prediction_store("Churn"))
    store.insert_predictions(["r1"], ["{}"], ["{}"], ts=1.0, monitor="m", model_version="1")
    store.close()
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["bentoml"]  # nothing beside the home
    monkeypatch.setenv("BENTOML_CONTAINERIZED", "false")  # outside a container: beside the home, as before
    assert prediction_store("Churn") == str(home.resolve().parent / "serving" / "Churn" / "predictions.db")
