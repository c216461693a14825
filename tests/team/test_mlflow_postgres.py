"""The loop against a team's tracking server: ``mlflow server`` on PostgreSQL, artifacts served by it.

One ``mlflow server`` per module (``--backend-store-uri postgresql+psycopg://`` on the
module's fresh database from tests/pg.py, ``--serve-artifacts --artifacts-destination``
a temp folder; ~16 s to start here, most of it MLflow's migrations on PostgreSQL) is the
tracking store of a project with no ``.nb2prod/mlflow.db``; the prediction store is a
schema of the same PostgreSQL server. ``nb2prod run`` (the capture in a real kernel: its
magics log and register through the server), ``export``, ``retrain``, ``rollback`` and
``promote`` go through it: the runner's SQLite fast path is off, every artifact is on the
server, and nothing is written as a local MLflow file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_notebook
from tests.lifecycle.test_loop import NOTEBOOK_CELLS
from tests.served import FOREIGN_ENV, free_port

pytestmark = pytest.mark.slow

MODEL = "tumor"
START_TIMEOUT_S = 120


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    artifacts: Path
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``mlflow server`` on the module's PostgreSQL database, serving artifacts from a temp folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = Server(
        url=f"http://127.0.0.1:{port}", proc=None, artifacts=folder / "artifacts", log=folder / "server.log"
    )  # type: ignore[arg-type]
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", pg_url,
        "--serve-artifacts", "--artifacts-destination", str(server.artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with server.log.open("wb") as log:
        # its own session: the server and its uvicorn workers are stopped together
        server.proc = subprocess.Popen(
            argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {server.log.read_text()[-3000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up in {START_TIMEOUT_S} s", pytrace=False)
            time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)


@dataclass
class Team:
    home: Path
    server: Server
    store: str
    out: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV and not k.startswith("MLFLOW_")}
        env.update(
            NB2PROD_HOME=str(self.home),
            MLFLOW_TRACKING_URI=self.server.url,
            NB2PROD_PREDICTION_STORE=self.store,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        )
        return env

    def cli(self, label: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "nb2prod", *args],
            cwd=self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        self.out[label] = done
        return done


@pytest.fixture(scope="module")
def team(mlflow_server: Server, pg_fresh: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """The whole loop once, in order; each test then checks one part of what it left."""
    from nb2prod.demo import new_project

    home = new_project(tmp_path_factory.mktemp("team") / "project")
    project = Team(home=home, server=mlflow_server, store=pg_fresh("team"))
    notebook = make_notebook(home / "notebooks" / "tumor.ipynb", NOTEBOOK_CELLS)
    # `nb2prod run` is the capture in a real kernel: its magics log and register through the
    # server (the kernel's environment names it), and the first version becomes the champion
    steps: list[tuple[str, tuple[str, ...], int]] = [
        ("run", ("run", str(notebook), "-p", "C", "0.0005", "--no-progress"), 0),  # v1
        ("export", ("export", f"{MODEL}@champion"), 0),
        ("retrain", ("retrain", MODEL, "--notebook", str(notebook), "-p", "C", "1.0", "--no-progress"), 0),
        ("rollback", ("rollback", MODEL), 0),  # v2 -> v1
        ("promote", ("promote", MODEL, "2"), 0),  # v1 -> v2
    ]
    for label, args, code in steps:
        if label == "export" and _champion(project) is None:
            # a kernel capture makes the first version the champion; a run may leave it to the user
            done = project.cli("first-promote", "promote", MODEL, "1")
            assert done.returncode == 0, done.stdout + done.stderr
        done = project.cli(label, *args)
        assert done.returncode == code, [
            (k, d.stdout[-3000:], d.stderr[-3000:]) for k, d in project.out.items()
        ]
    yield project


def _champion(team: Team) -> str | None:
    from nb2prod.tracking import registry

    return registry.alias_version(_client(team), MODEL, registry.CHAMPION)


def _client(team: Team) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=team.server.url, registry_uri=team.server.url)


def test_every_step_of_the_loop_ran_against_the_server(team: Team) -> None:
    from nb2prod.tracking import registry

    client = _client(team)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2]  # nb2prod run's capture, retrain's challenger
    # retrain's decision is its first line (MLflow's "View run" links stay out of stdout)
    assert team.out["retrain"].stdout.startswith("PROMOTED"), team.out["retrain"].stdout
    moves = [(e.alias, e.from_version, e.to_version) for e in registry.alias_history(client, MODEL)]
    assert [m for m in moves if m[0] == registry.CHAMPION] == [
        ("champion", None, "1"),
        ("champion", "1", "2"),
        ("champion", "2", "1"),
        ("champion", "1", "2"),
    ], moves
    assert registry.alias_version(client, MODEL, registry.CHAMPION) == "2"
    assert "rollback from 2" in team.out["rollback"].stdout
    for label in ("rollback", "promote"):  # the re-exported Bento carries both: no rebuild
        assert "a running service follows within seconds" in team.out[label].stdout


def test_runs_and_models_live_on_the_server_and_nothing_in_local_files(team: Team) -> None:
    client = _client(team)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) >= 2  # nb2prod run, and the run retrain made
    for run in runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    run = next(r for r in runs if r.data.tags.get("nb2prod.reexecutes") is not None or r.data.params.get("C"))
    assert "notebook/source.ipynb" in {f.path for f in client.list_artifacts(run.info.run_id, "notebook")}
    stored = [p for p in team.server.artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "environment.json" for p in stored)  # uploaded through the server
    assert any(p.name.startswith("model.") or p.name == "MLmodel" for p in stored)
    assert not (team.home / ".nb2prod" / "mlflow.db").exists()
    assert not list(team.home.rglob("mlruns")) and not list(team.home.rglob("mlflow.db"))


def test_the_runner_took_mlflow_not_its_sqlite_fast_path(team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    from nb2prod.config import load_settings
    from nb2prod.tracking.runstore import MlflowRunStore, open_run_store

    for key, value in team.env().items():
        monkeypatch.setenv(key, value)
    settings = load_settings(team.home)
    assert settings.tracking_uri == team.server.url and not settings.is_local_store
    store = open_run_store(settings, settings.experiment)
    assert isinstance(store, MlflowRunStore)
    run = team.out["run"].stdout + team.out["run"].stderr
    assert "Traceback" not in run


def test_the_exported_bento_and_the_switches(team: Team) -> None:
    from nb2prod.config import load_settings
    from nb2prod.lifecycle.served import served_manifest
    from nb2prod.serving.store import Store

    settings = load_settings(team.home)
    tag, manifest = served_manifest(settings, MODEL)
    assert manifest.model_version == "2" and set(manifest.models) == {"2", "1"}  # retrain re-exported
    assert "built in" in team.out["export"].stdout and tag in team.out["retrain"].stdout
    store = Store(team.store)
    try:
        control = store.control()
    finally:
        store.close()
    assert control["active"][0] == "2"  # the last switch reached the shared store
    for done in team.out.values():
        assert team.store.split(":")[2].split("@")[0] not in done.stdout + done.stderr  # no password
