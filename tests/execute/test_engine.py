"""The ``nb2prod`` papermill engine comes from papermill's ``papermill.engine`` entry point, and
``import nb2prod.execute`` stays light (no kernel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nb2prod.exceptions import ExecutionError
from tests.execute.runs import NOTEBOOKS


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def test_papermill_finds_the_engine_through_its_entry_point() -> None:
    code = (
        "import papermill\n"
        "from papermill.engines import papermill_engines\n"
        "from nb2prod.execute.engine import ENGINE_NAME, Nb2ProdEngine\n"
        "print(papermill_engines.get_engine(ENGINE_NAME) is Nb2ProdEngine)"
    )
    assert _python(code) == "True"


def test_import_nb2prod_execute_loads_neither_papermill_nor_mlflow() -> None:
    heavy = ("papermill", "mlflow", "nbclient", "nbconvert", "distributed")
    code = f"import json, sys\nimport nb2prod.execute\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    assert json.loads(_python(code)) == []


def test_the_engine_runs_notebooks_for_nb2prod_run_only(tmp_path: Path) -> None:
    import papermill

    with pytest.raises(ExecutionError, match="nb2prod run only"):
        papermill.execute_notebook(
            str(NOTEBOOKS / "params.ipynb"),
            str(tmp_path / "out.ipynb"),
            engine_name="nb2prod",
            progress_bar=False,
        )
