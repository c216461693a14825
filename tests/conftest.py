"""Shared fixtures: a temp project on a real SQLite MLflow store, an in-process IPython shell,
and a runner for notebooks in real kernels. tests/served.py adds "a project with a captured
model" and "a running service" (``captured_project``, ``service``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nb2prod.demo import new_project
from nb2prod.exceptions import StoreError

pytest_plugins = ["tests.served", "tests.pg"]


@pytest.fixture(autouse=True)
def _mlflow_uri_restored() -> Iterator[None]:
    """Every test leaves MLflow's process-wide tracking and registry URIs as it found them.

    ``nb2prod.tracking.client`` calls ``mlflow.set_tracking_uri``/``set_registry_uri``, which set
    MLflow's globals and write ``MLFLOW_*_URI`` into ``os.environ``: a test that talked to a
    tracking server would otherwise hand that server to the next module's project (same xdist
    worker), whose settings read the variable."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {key: os.environ.get(key) for key in keys}
    yield
    if all(os.environ.get(key) == value for key, value in saved.items()):
        return
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if "mlflow" in sys.modules:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its migrations applied once, copied by each test (saves ~2 s each)."""
    import mlflow

    folder = tmp_path_factory.mktemp("store-template")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_template: Path) -> Path:
    """A fresh nb2prod project home with its own store; the cwd and env point at it."""
    home = new_project(tmp_path / "project")
    (home / ".nb2prod").mkdir()
    shutil.copy(store_template, home / ".nb2prod" / "mlflow.db")
    monkeypatch.setenv("NB2PROD_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}")
    # nb2prod.tracking.client calls mlflow.set_tracking_uri/set_registry_uri, which set MLflow's
    # process globals and write MLFLOW_*_URI into os.environ: without this, a test that runs
    # after one that captured (same xdist worker) reads the previous test's registry.
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    for name in ("NB2PROD_NOTEBOOK", "NB2PROD_EXPERIMENT", "NB2PROD_STRICT", "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(home)
    return home


@pytest.fixture
def client(project: Path) -> Any:
    """MLflow's own client on the project's store: tests check records through it."""
    import mlflow

    uri = f"sqlite:///{project / '.nb2prod' / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def ip(project: Path) -> Iterator[Any]:
    """A real in-process IPython shell with ``%load_ext nb2prod``."""
    from IPython.core.interactiveshell import InteractiveShell

    from nb2prod import session

    # IPython puts its user namespace in sys.modules["__main__"] (a module without __spec__);
    # multiprocessing's spawn (Dask's nannies) in a later test of this worker would fail on it.
    main = sys.modules["__main__"]
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nb2prod")
    yield shell
    if session.active() is not None:
        with contextlib.suppress(StoreError):  # a test may have stopped the store on purpose
            session.end()
    shell.run_line_magic("unload_ext", "nb2prod")
    shell.reset(new_session=False)
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def breast_cancer() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame
