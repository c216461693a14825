"""A real Jupyter server (or JupyterLab) on 127.0.0.1 with a token, for the panel's tests.

``jupyter server`` / ``jupyter lab`` run as subprocesses of the project (its env and cwd),
with nb2prod's server extension enabled on the command line (an editable install may not
have the enable file in the venv) and, for Lab, the panel built from
``extensions/nb2prod-lab`` (``nb2prod/jupyter/labextension``) on the extension path.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LABEXTENSION = REPO / "nb2prod" / "jupyter" / "labextension"
EXTENSION_NAME = "nb2prod-lab"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` locally; fail in CI (CI must run the test)."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"must run in CI (CI=true), but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "",
        timeout: float = 60,
    ) -> tuple[int, Any]:
        """``METHOD url+path`` with the token (``token=None``: without); JSON in and out."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        use = self.token if token == "" else token
        if use is not None:
            req.add_header("Authorization", f"token {use}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        except (urllib.error.URLError, OSError):
            return 0, None
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_action(self, action_id: str, timeout: float = 300) -> dict[str, Any]:
        """Poll an action until it is no longer running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, action = self.get(f"/nb2prod/api/actions/{action_id}")
            assert status == 200, action
            if action["status"] != "running":
                return dict(action)
            time.sleep(0.3)
        raise AssertionError(f"action {action_id} still running after {timeout} s: {action}")


def free_port() -> int:
    from nb2prod.export.serve import free_port as port

    return port()


def lab_extensions_dir(root: Path) -> Path:
    """A folder holding ``nb2prod-lab`` -> the built panel (Lab's ``extra_labextensions_path``)."""
    folder = root / "labextensions"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / EXTENSION_NAME
    if not link.exists():
        link.symlink_to(LABEXTENSION, target_is_directory=True)
    return folder


@contextlib.contextmanager
def jupyter(
    app: str,
    home: Path,
    env: Mapping[str, str],
    log: Path,
    *,
    extra: tuple[str, ...] = (),
    timeout: float = 90,
) -> Iterator[Server]:
    """``jupyter APP`` (``server`` or ``lab``) in ``home`` on 127.0.0.1, ready; stopped after."""
    port, token = free_port(), secrets.token_hex(16)
    exe = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or "jupyter"
    argv = [
        exe,
        app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home}",
        "--ServerApp.jpserver_extensions={'nb2prod.jupyter': True}",
        *extra,
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    full_env = dict(env)
    full_env.setdefault("JUPYTER_CONFIG_DIR", str(log.parent / "jupyter-config"))
    full_env.setdefault("JUPYTER_RUNTIME_DIR", str(log.parent / "jupyter-runtime"))
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.setdefault("OPENBLAS_NUM_THREADS", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            argv, cwd=home, env=full_env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(url=f"http://127.0.0.1:{port}", token=token, proc=proc, log=log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"jupyter {app} exited: {server.log_text()[-3000:]}")
            if server.get("/api/status", timeout=2)[0] == 200:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter {app} not ready in {timeout} s: {server.log_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            # its own session: the kernels and action workers it started end with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
