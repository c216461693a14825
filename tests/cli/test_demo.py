"""`nb2prod demo` end to end, and the example notebook kept in sync with its source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nb2prod.demo import example_notebook

ROOT = Path(__file__).resolve().parents[2]


def _sources(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_repository_notebook_equals_the_demo_source() -> None:
    on_disk = nbformat.read(str(ROOT / "notebooks" / "train.ipynb"), as_version=4)
    assert _sources(on_disk) == _sources(example_notebook()), (
        "notebooks/train.ipynb is out of date: regenerate it with "
        "python -c 'from pathlib import Path; from nb2prod.demo import write_example; "
        'write_example(Path("notebooks/train.ipynb"))\''
    )
    params = [c for c in on_disk.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1


def test_help_lists_commands_and_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nb2prod", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out and "Exit codes" in out


@pytest.mark.slow
def test_demo_runs_the_loop_and_prints_what_was_captured(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("NB2PROD_", "MLFLOW_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "nb2prod", "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Registered models" in out and "breast-cancer" in out
    assert "xxh3_128:" in out and "scikit-learn==" in out
    assert "REPRODUCED: run" in out and "NOT REPRODUCED" not in out
    assert (folder / ".nb2prod" / "mlflow.db").exists()
    # the demo ends by exporting, serving and calling the model
    # The re-run with C=0.5 registered version 2; the demo exports and serves the newest version.
    assert "Bento breast-cancer:v2-" in out and "/metadata: model breast-cancer v2" in out
    assert "a bad request got 422" in out
    # ... and closes the loop: a refused retrain, no drift then drift, live quality, a rollback
    flat = " ".join(out.split())  # rich wraps lines at the terminal width
    assert "nb2prod retrain -p C 0.0001: REFUSED: accuracy" in flat
    assert "(and their labels, through /feedback): ok" in flat
    assert "drifted: mean area, mean radius" in flat
    assert "labelled" in flat and "accuracy" in flat
    assert "nb2prod rollback: champion 2 -> 1; the live service answered from v1 after" in flat
    assert (folder / "bentos" / "breast-cancer" / "service.py").is_file()
    executed = nbformat.read(str(folder / "notebooks" / "train.ipynb"), as_version=4)
    assert all(
        o["output_type"] != "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
