"""``nb2prod serve NAME``: the command line and environment that run the newest Bento of NAME."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ServeError
from nb2prod.serving.store import STORE_ENV
from nb2prod.serving.store import prediction_store as _default_store
from nb2prod.serving.writer import DURABLE_ENV

CONFIG_OPTIONS_ENV = "BENTOML_CONFIG_OPTIONS"


def workers_option(tag: str, workers: int) -> str:
    """The ``BENTOML_CONFIG_OPTIONS`` entry that runs ``workers`` processes of Bento ``tag``'s service.

    The service is named like the Bento (``@bentoml.service(name=...)`` in the rendered
    ``service.py``); BentoML needs the name quoted, else it fails on names it cannot parse.

    Raises:
        ServeError: ``workers`` is below 1.
    """
    if workers < 1:
        raise ServeError(f"--workers {workers} is not a number of processes", hint="give 1 or more")
    service = tag.split(":", 1)[0]
    return f'services."{service}".workers={workers}'


@dataclass(frozen=True)
class ServeCommand:
    """What to execute: ``argv`` with ``env``; the tag and where predictions are logged."""

    argv: list[str]
    env: dict[str, str]
    tag: str
    prediction_store: str


def serve_command(
    name: str,
    *,
    port: int = 3000,
    host: str = "127.0.0.1",
    settings: Settings | None = None,
    tag: str | None = None,
    durable: bool = False,
    store: str | None = None,
    workers: int | None = None,
) -> ServeCommand:
    """The ``bentoml serve`` invocation of the newest Bento of ``name`` (or of ``tag``).

    ``durable``: answer each prediction only after its log row is committed
    (``NB2PROD_DURABLE=1``, which wins over the Bento's own ``durable`` option).
    ``store``: the prediction store (a path or a SQLAlchemy URL); default
    :func:`nb2prod.serving.store.prediction_store`, which ``NB2PROD_PREDICTION_STORE`` overrides.
    ``workers``: BentoML worker processes of the service (default: the Bento's own, one);
    added to ``BENTOML_CONFIG_OPTIONS`` after what the environment already sets there.

    Raises:
        ExportError: no Bento of ``name`` was built in this project's BentoML store.
    """
    from nb2prod.export.bento_store import latest_bento
    from nb2prod.export.builder import parse_ref

    settings = settings or load_settings()
    model, _, _ = parse_ref(name)
    tag = tag or latest_bento(settings, model)
    store = store or _default_store(model, settings.bentoml_home)
    if "://" not in store:
        Path(store).parent.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        BENTOML_HOME=str(settings.bentoml_home),
        BENTOML_DO_NOT_TRACK="True",
        **{STORE_ENV: store},
    )
    if durable:
        env[DURABLE_ENV] = "1"
    if workers is not None:
        env[CONFIG_OPTIONS_ENV] = " ".join(
            filter(None, [env.get(CONFIG_OPTIONS_ENV, ""), workers_option(tag, workers)])
        )
    exe = (
        shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which("bentoml") or "bentoml"
    )
    argv = [exe, "serve", tag, "--host", host, "--port", str(port)]
    return ServeCommand(argv=argv, env=env, tag=tag, prediction_store=store)


@dataclass
class RunningServer:
    """A ``bentoml serve`` started by :func:`running`: its base URL and process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(cmd: ServeCommand, log: Path, *, timeout: float = 120.0) -> Iterator[RunningServer]:
    """Start ``cmd``, wait for ``/readyz``, yield, then stop it (SIGTERM to the serve process, reap).

    Raises:
        ServeError: the server exited or did not become ready in ``timeout`` seconds.
    """
    port = cmd.argv[cmd.argv.index("--port") + 1]
    host = cmd.argv[cmd.argv.index("--host") + 1]
    url = f"http://{host}:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        proc = subprocess.Popen(cmd.argv, env=cmd.env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServeError(
                    f"bentoml serve {cmd.tag} exited with code {proc.returncode}",
                    hint=f"see its log: {log}",
                )
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServeError(
                    f"{cmd.tag} was not ready after {timeout:.0f} s", hint=f"see its log and /metadata: {log}"
                )
            time.sleep(0.3)
        yield RunningServer(url=url, process=proc, log=log)
    finally:
        # bentoml's workers run in their own sessions: stop the serve process, it stops them.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
