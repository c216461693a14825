"""Shared fixtures of the export, serving and loop tests (a pytest plugin loaded by conftest.py).

* ``captured_project``: a project on a real SQLite MLflow store whose model was captured
  in real kernels. The test module says how, with a module-level ``CAPTURE``
  (:class:`Capture`); modules naming the same capture in one process share the project
  (a notebook run and a Bento build each cost tens of seconds).
* ``exported``: the Bento that capture exported (when it exports one).
* ``service``: ``nb2prod serve MODEL`` (the CLI execs ``bentoml serve``) of that
  project, ready; ``SERVICE_ENV`` of the module adds environment variables.
* :func:`serving`: the same for a test that starts its own server (``bentoml serve``
  directly, another BentoML home, another store).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Environment that must not leak from the shell running the tests into a project's processes.
FOREIGN_ENV = ("BENTOML_HOME", "NB2PROD_PREDICTION_STORE")


@dataclass
class CapturedProject:
    """A project home whose model was captured, and what its capture left (``data``)."""

    home: Path
    settings: Any
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / '.nb2prod' / 'mlflow.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a command run in this project."""
        env = dict(os.environ, NB2PROD_HOME=str(self.home), MLFLOW_TRACKING_URI=self.tracking_uri)
        for name in FOREIGN_ENV:
            env.pop(name, None)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``nb2prod ARGS`` in this project, to the end."""
        return subprocess.run(
            [sys.executable, "-m", "nb2prod", *args],
            cwd=self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_popen(self, *args: str) -> subprocess.Popen[str]:
        """``nb2prod ARGS`` in this project, started in its own process group."""
        return subprocess.Popen(
            [sys.executable, "-m", "nb2prod", *args],
            env=self.env(),
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


@dataclass(frozen=True)
class Capture:
    """How a test module captures its model: ``run(project)`` fills ``project.data``.

    ``key`` names the capture: modules with the same key share one project per process.
    """

    key: str
    run: Callable[[CapturedProject], None]


def new_project_home(root: Path, store_template: Path) -> Path:
    """A fresh project under ``root`` with a copy of the migrated MLflow store."""
    from nb2prod.demo import new_project

    home = new_project(root / "project")
    (home / ".nb2prod").mkdir()
    shutil.copy(store_template, home / ".nb2prod" / "mlflow.db")
    return home


@contextlib.contextmanager
def inside(home: Path) -> Iterator[None]:
    """Environment, cwd and MLflow's process globals of ``home``; all restored after.

    nb2prod.tracking.client sets MLflow's process-global tracking and registry URIs (and
    writes their env vars): the modules that run after this one in the same worker must
    not inherit this project's store.
    """
    from mlflow.tracking._model_registry import utils as mlflow_registry
    from mlflow.tracking._tracking_service import utils as mlflow_uri

    global_uris = (mlflow_uri._tracking_uri, mlflow_registry._registry_uri)
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NB2PROD_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}")
        for name in FOREIGN_ENV:
            mp.delenv(name, raising=False)
        mp.chdir(home)
        try:
            yield
        finally:
            mlflow_uri._tracking_uri, mlflow_registry._registry_uri = global_uris
            for key, value in env_before.items():  # MLflow wrote them to os.environ itself
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


_built: dict[str, CapturedProject] = {}


@pytest.fixture(scope="module")
def captured_project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, store_template: Path
) -> Iterator[CapturedProject]:
    """The project of the module's ``CAPTURE``, captured once per process; cwd and env point at it."""
    from nb2prod.config import load_settings

    capture: Capture = request.module.CAPTURE
    project = _built.get(capture.key)
    if project is None:
        home = new_project_home(tmp_path_factory.mktemp(capture.key), store_template)
        project = CapturedProject(home=home, settings=load_settings(home))
        with inside(home):
            capture.run(project)
        _built[capture.key] = project
    with inside(project.home):
        yield project


@pytest.fixture(scope="module")
def exported(captured_project: CapturedProject) -> Any:
    """The ``ExportResult`` of the Bento the module's capture exported."""
    return captured_project.data["exported"]


# ------------------------------------------------------------------------------------------ services


@dataclass
class Service:
    """A ``bentoml serve`` process: its URL, log and prediction store."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    store: Path | None = None

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET url+path``: status and body (0 when nothing answered)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, bytes, dict[str, str]]:
        """``POST url+path``: status, body and headers (lower-case names)."""
        req = urllib.request.Request(self.url + path, data=body, method="POST", headers=dict(headers or {}))
        if content_type is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as err:
            return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}

    def request(
        self, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """JSON in, JSON (or text) out; ``body=None`` is a GET."""
        if body is None:
            status, raw = self.get(path, timeout=10)
        else:
            status, raw, _ = self.post(path, json.dumps(body).encode(), headers=headers, timeout=10)
        return status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    from nb2prod.export.serve import free_port as port

    return port()


def start(argv: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None) -> Service:
    """Start a server (``argv`` ends with ``--port P``; it listens on 127.0.0.1)."""
    port = argv[argv.index("--port") + 1]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    return Service(url=f"http://127.0.0.1:{port}", proc=proc, log=log)


def wait_ready(service: Service, timeout: float = 120.0) -> None:
    """Until ``/readyz`` answers 200; AssertionError with the log's tail when it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise AssertionError(f"bentoml serve exited: {service.log_text()[-3000:]}")
        if service.get("/readyz", timeout=2)[0] == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"not ready after {timeout} s: {service.log_text()[-3000:]}")


def stop(service: Service) -> None:
    # bentoml's workers run in their own sessions: SIGTERM the serve process, it stops them.
    if service.proc.poll() is None:
        service.proc.send_signal(signal.SIGTERM)
        try:
            service.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.proc.kill()
            service.proc.wait(timeout=10)


def bentoml_serve_argv(tag: str, port: int) -> list[str]:
    """``bentoml serve TAG`` itself, as a user would type it (no nb2prod in between)."""
    exe = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    return [exe, "serve", tag, "--host", "127.0.0.1", "--port", str(port)]


@contextlib.contextmanager
def serving(
    argv: list[str], env: Mapping[str, str], log: Path, *, cwd: Path | None = None, ready: bool = True
) -> Iterator[Service]:
    """A server for the ``with`` block: started, ready (unless ``ready=False``), then stopped."""
    service = start(argv, env, log, cwd)
    try:
        if ready:
            wait_ready(service)
        yield service
    finally:
        stop(service)


def default_store(project: CapturedProject, model: str) -> Path:
    """Where a service of ``model`` in ``project`` logs by default: inside the project home."""
    return project.home / ".nb2prod" / "serving" / model / "predictions.db"


@pytest.fixture(scope="module")
def service(request: pytest.FixtureRequest, captured_project: CapturedProject) -> Iterator[Service]:
    """``nb2prod serve MODEL --port P`` of the module's project, ready; stopped after the module."""
    model: str = request.module.MODEL
    extra: dict[str, str] = dict(getattr(request.module, "SERVICE_ENV", {}))
    port = free_port()
    argv = [sys.executable, "-m", "nb2prod", "serve", model, "--port", str(port)]
    log = captured_project.home / f"serve-{request.module.__name__.rsplit('.', 1)[-1]}.log"
    with serving(argv, captured_project.env(**extra), log, cwd=captured_project.home) as srv:
        srv.store = default_store(captured_project, model)
        yield srv
