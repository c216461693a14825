"""The tracking store failing: unreachable at start, and a real MLflow server that goes away mid-session."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nb2prod import exceptions as exc
from nb2prod import session


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_fails_fast_with_a_clear_error(project: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    # "does not answer" comes only from the reachability probe (5 s timeout), before MLflow's retries.
    with pytest.raises(exc.StoreError, match="does not answer") as info:
        session.start("nowhere")
    assert "no run was opened" in str(info.value) and "unset MLFLOW_TRACKING_URI" in str(info.value)
    assert session.active() is None


def _healthy(url: str, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether the server answers ``/health`` before it exits or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # it exited: another process took the port between our probe and its bind
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return True
        except (OSError, http.client.HTTPException):
            time.sleep(0.3)
    return False


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    for _attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if _healthy(url, proc, 90):
            yield url, proc
            _kill(proc)
            return
        _kill(proc)
    pytest.fail("mlflow server did not start on any of 3 ports in 90 s each")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """The server and its workers share a session of their own: end them all at once."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_remote_server_then_outage_warns_and_keeps_the_notebook_working(
    ip: Any, mlflow_server: tuple[str, Any], monkeypatch: Any, breast_cancer: Any, capsys: Any
) -> None:
    import mlflow

    url, proc = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ip.user_ns["df"] = breast_cancer
    ip.run_line_magic("nb2prod", "start remote")
    ip.run_line_magic("nb2prod", "data df")
    run_id = session.current().run_id
    remote = mlflow.MlflowClient(tracking_uri=url)
    assert remote.get_run(run_id).data.tags["nb2prod.data.df.digest"].startswith("xxh3_128:")
    assert "environment.json" in {f.path for f in remote.list_artifacts(run_id)}

    _kill(proc)  # the outage
    capsys.readouterr()
    ip.run_line_magic("nb2prod", "data df --name again")
    err = capsys.readouterr().err
    assert "nb2prod WARNING" in err and "not recorded: dataset 'again'" in err
    assert ip.run_cell("21 * 2").result == 42
    report = session.status()
    assert report.not_recorded == ["dataset 'again'"]
    assert [d.name for d in report.datasets] == ["df"]
    with pytest.raises(exc.StoreError, match="failed at the tracking store"):
        session.data(breast_cancer, name="direct")
