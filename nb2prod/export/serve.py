"""``nb2prod serve NAME``: the command line and environment that run the newest Bento of NAME."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from nb2prod.config import Settings, load_settings

STORE_ENV = "NB2PROD_PREDICTION_STORE"


@dataclass(frozen=True)
class ServeCommand:
    """What to execute: ``argv`` with ``env``; the tag and where predictions are logged."""

    argv: list[str]
    env: dict[str, str]
    tag: str
    prediction_store: str


def prediction_store(settings: Settings, name: str) -> str:
    """Default prediction store of a model served from this project: inside the project home."""
    return os.environ.get(STORE_ENV) or str(settings.state_dir / "serving" / name / "predictions.db")


def serve_command(
    name: str,
    *,
    port: int = 3000,
    host: str = "127.0.0.1",
    settings: Settings | None = None,
    tag: str | None = None,
) -> ServeCommand:
    """The ``bentoml serve`` invocation of the newest Bento of ``name`` (or of ``tag``).

    Raises:
        ExportError: no Bento of ``name`` was built in this project's BentoML store.
    """
    from nb2prod.export.builder import latest_bento, parse_ref

    settings = settings or load_settings()
    model, _, _ = parse_ref(name)
    tag = tag or latest_bento(settings, model)
    store = prediction_store(settings, model)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        BENTOML_HOME=str(settings.bentoml_home),
        BENTOML_DO_NOT_TRACK="True",
        **{STORE_ENV: store},
    )
    exe = (
        shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which("bentoml") or "bentoml"
    )
    argv = [exe, "serve", tag, "--host", host, "--port", str(port)]
    return ServeCommand(argv=argv, env=env, tag=tag, prediction_store=store)
