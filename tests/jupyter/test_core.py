"""What the panel shows, from a real MLflow tracking server (``mlflow server`` on 127.0.0.1).

The store URL carries credentials: the payload links runs and versions to the server's UI
and never holds the password. Runs and versions are written through MLflow's own client,
tagged as nb2prod's capture tags them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nb2prod.config import Settings
from nb2prod.jupyter import core
from nb2prod.tracking import names
from tests.jupyter.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination", str(folder / "artifacts"), "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "mlflow server exited"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server not healthy in 120 s"
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_notebook_view_from_a_tracking_server(tracking_server: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.entities import Metric, Param

    home = tmp_path / "project"
    home.mkdir()
    notebook = home / "train.ipynb"
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    client = mlflow.MlflowClient(tracking_server, tracking_server)
    experiment = client.create_experiment("panel-remote")
    run_ids = []
    for i, (env, data) in enumerate((("e1", "d1"), ("e2", "d1"), ("e2", "d2"))):
        run = client.create_run(
            experiment,
            tags={
                names.TAG_NOTEBOOK: str(notebook),
                names.TAG_ENV_DIGEST: env,
                names.TAG_NOTEBOOK_DIGEST: "c1",
                names.data_digest_tag("train"): f"xxh3_128:{data}",
            },
        )
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("test_accuracy", 0.9 + i / 100, 0, 0)],
            params=[Param("C", str(i))],
        )
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)
        time.sleep(0.01)  # distinct start times
    client.create_registered_model("remote")
    client.create_model_version("remote", f"runs:/{run_ids[-1]}/model", run_id=run_ids[-1])
    client.set_registered_model_alias("remote", "champion", "1")

    with_password = tracking_server.replace("http://", "http://alice:s3cret@")
    settings = Settings(home=home, tracking_uri=with_password)
    view = core.notebook_view(settings, notebook)
    payload = json.dumps(core.to_json(view))
    assert "s3cret" not in payload
    assert view.project.tracking_uri == with_password.replace("s3cret", "***")
    assert view.project.ui_url == tracking_server
    assert [r.run_id for r in view.runs] == run_ids[::-1]
    latest, middle, first = view.runs
    assert latest.changes == ["data: train"] and middle.changes == ["environment"] and first.changes == []
    assert latest.url == f"{tracking_server}/#/experiments/{experiment}/runs/{run_ids[-1]}"
    (model,) = view.models
    assert model.aliases == {"champion": "1"}
    (version,) = model.versions
    assert version.aliases == ["champion"] and version.from_notebook
    assert version.url == f"{tracking_server}/#/models/remote/versions/1"
    assert [m.name for m in core.models_view(settings)] == ["remote"]
