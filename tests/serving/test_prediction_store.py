"""The prediction store on both backends (SQLite, and a real PostgreSQL server: tests/pg.py),
and where a service logs by default."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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


def test_a_batchs_refusals_count_once_it_delivers(location: str) -> None:
    """A batch's refusals wait under its own kind: delivered, they become ``invalid`` events;
    forgotten (the batch failed), they are gone; the service's events are never touched."""
    from nb2prod.batch.log import deliver, forget, pending_kind
    from nb2prod.serving.store import Store

    store = Store(location)
    refusal = {"reason": "type", "field": "x", "ts": 100.0}
    store.add_events(
        [
            {"kind": "invalid", "reason": "null", "field": "y", "ts": 99.0},  # the service's
            {**refusal, "kind": pending_kind("b20261129000000aaaa")},
            {**refusal, "kind": pending_kind("b20261129000000aaaa")},
            {**refusal, "kind": pending_kind("b20261129000000bbbb")},
        ]
    )
    counted = "SELECT reason, COUNT(*) FROM events WHERE kind = 'invalid' GROUP BY reason ORDER BY reason"
    assert store.query(counted) == [("null", 1)]  # nothing of a batch still scoring counts
    deliver(location, "b20261129000000aaaa", started=100.0)
    forget(location, "b20261129000000bbbb")
    assert store.query(counted) == [("null", 1), ("type", 2)]
    assert store.query("SELECT COUNT(*) FROM events") == [(3,)]
    store.close()


def test_batch_chunks_read_back_like_the_services_rows(location: str) -> None:
    """A batch's chunks (Parquet payloads, rows resolved by range) give back each row as the
    service logs one: features with text intact (quotes, tabs, newlines), nulls where the input
    was null or not finite, the answer with its probabilities; rejected rows (gaps) are not
    known ids, and feedback joins by request id."""
    from nb2prod.batch import rows as batch_rows
    from nb2prod.serving.store import Store

    store = Store(location)
    x = np.array([0.5, np.nan, np.inf, 4.0, 5.0])
    note = np.array(['a\tb\\c\n"q"', "plain", None, "x", "y"], dtype=object)
    columns = {
        "x": (x, np.zeros(5, dtype=bool), "float"),
        "n": (np.arange(5), np.array([False, False, False, True, False]), "int"),
        "note": (note, np.array([False, False, True, False, False]), "string"),
        "when": (
            np.array(["2026-11-29T10:00:00.123456789"] * 5, dtype="datetime64[ns]"),
            np.array([False, True, False, False, False]),
            "datetime",
        ),
    }
    predictions = np.array(["yes", "no", "yes", "no", "yes"], dtype=object)
    proba = {"no": np.array([0.1, 0.8, 0.3, 0.6, 0.2]), "yes": np.array([0.9, 0.2, 0.7, 0.4, 0.8])}
    # rows 0..4 of the input, with 2 and 6 refused: chunk one holds 0, 1, 3; chunk two 4, 5, 7
    first = batch_rows.chunk_row(
        "b1",
        np.array([0, 1, 3]),
        {k: (v[:3], m[:3], t) for k, (v, m, t) in columns.items()},
        predictions[:3],
        {k: v[:3] for k, v in proba.items()},
        ts=5.0,
        version="2",
    )
    second = batch_rows.chunk_row(
        "b1",
        np.array([4, 5, 7]),
        {k: (v[2:], m[2:], t) for k, (v, m, t) in columns.items()},
        predictions[2:],
        {k: v[2:] for k, v in proba.items()},
        ts=6.0,
        version="2",
    )
    assert first["present"] is not None and (first["first_row"], first["last_row"]) == (0, 3)
    batch_rows.write(store, first)
    batch_rows.write(store, second)
    ids = [
        "b1-0",
        "b1-1",
        "b1-2",
        "b1-3",
        "b1-4",
        "b1-5",
        "b1-6",
        "b1-7",
        "b1-8",
        "b2-0",
        "r-1",
        "b1-x",
        "b1-01",
    ]
    assert store.known_request_ids(ids) == {"b1-0", "b1-1", "b1-3", "b1-4", "b1-5", "b1-7"}
    # b1-70 and b1-01 name no logged row (b1-01 is not how row 1 is written: one row, one id)
    store.add_feedback([("b1-1", "no"), ("b1-7", "yes"), ("b1-70", "no"), ("b1-01", "yes")], source="test")
    got = batch_rows.lookup(store, ids)
    assert sorted(got) == ["b1-0", "b1-1", "b1-3", "b1-4", "b1-5", "b1-7"]
    when = "2026-11-29T10:00:00.123456789"
    assert got["b1-0"].features == {"x": 0.5, "n": 0, "note": 'a\tb\\c\n"q"', "when": when}
    assert got["b1-1"].features == {"x": None, "n": 1, "note": "plain", "when": None}  # NaN logged as null
    assert got["b1-3"].features == {
        "x": None,
        "n": 2,
        "note": None,
        "when": when,
    }  # inf as null, null as null
    assert got["b1-1"].answer == {"prediction": "no", "probabilities": {"no": 0.8, "yes": 0.2}}
    assert (got["b1-1"].label, got["b1-0"].label, got["b1-7"].ts) == ('"no"', None, 6.0)
    labelled = batch_rows.labelled(store, None, 10.0, with_features=True)
    assert sorted((r.request_id, r.label, r.answer["prediction"]) for r in labelled) == [
        ("b1-1", '"no"', "no"),
        ("b1-7", '"yes"', "yes"),
    ]
    assert batch_rows.labelled(store, 5.5, 10.0)[0].request_id == "b1-7"  # the window holds chunk two
    assert batch_rows.traffic(store, None, 10.0) == {"2": 6}
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
    store.add_events([{"kind": "invalid", "ts": 1.0, "reason": "r", "field": "f"}])
    store.close()
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["bentoml"]  # nothing beside the home
    monkeypatch.setenv("BENTOML_CONTAINERIZED", "false")  # outside a container: beside the home, as before
    assert prediction_store("Churn") == str(home.resolve().parent / "serving" / "Churn" / "predictions.db")
