"""The prediction store: where a service logs by default, and the SQLAlchemy path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_prediction_store_through_a_sqlalchemy_url(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import _Writer, recent

    url = f"sqlite+pysqlite:///{tmp_path / 'sa.db'}"  # the SQLAlchemy path, as for PostgreSQL
    writer = _Writer(url, maxsize=100, on_drop=None, on_write=None)
    for i in range(7):
        writer.put((f"r{i}", float(i), "m", "1", json.dumps({"x": i}), json.dumps({"prediction": i % 2})))
    writer.close()
    assert writer.written == 7 and writer.dropped == 0
    rows = recent(url, 5)
    assert [json.loads(f)["x"] for f, _ in rows] == [6, 5, 4, 3, 2]


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
