"""The project of the panel's tests: a notebook with a ``parameters`` cell, run twice for real.

``TINY``: ``notebooks/tiny.ipynb`` (tests/notebooks/tiny_model.ipynb) executed by
``nb2prod run``'s core in a real kernel with ``C=0.5``: one FINISHED run of the notebook,
datasets ``train`` and ``test``, and registered model ``tiny`` version 1. (The tests make
the second version through the panel's own re-run action.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.served import Capture, CapturedProject

TINY_MODEL = "tiny"
NOTEBOOK = "notebooks/tiny.ipynb"
SOURCE = Path(__file__).resolve().parents[1] / "notebooks" / "tiny_model.ipynb"


def write_data(path: Path, shift: float = 0.0) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    label = (a + b > 0).astype(int)
    pd.DataFrame({"a": a + shift * label, "b": b, "label": label}).to_csv(path, index=False)


def _capture_tiny(project: CapturedProject) -> None:
    from nb2prod.execute import run_notebook

    notebook = project.home / NOTEBOOK
    notebook.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE, notebook)
    write_data(notebook.parent / "data.csv")
    result = run_notebook(notebook, {"C": 0.5}, progress=False, settings=project.settings, threads=1)
    assert result.ok, result.error
    project.data["run"] = result
    project.data["notebook"] = notebook


TINY = Capture(key="tiny-two-runs", run=_capture_tiny)
