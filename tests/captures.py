"""Captures shared by test modules (see ``Capture`` in tests/served.py).

``TUMOR``: one notebook, run in a real kernel, trains and captures a classifier on the
breast cancer data with four added columns of other kinds (a category, a bool, an int, a
float with missing values), so the input contract has every rule to break; then it is
exported. The export tests and the served-model tests share it.
"""

from __future__ import annotations

import json

from tests.helpers import make_notebook, run_notebook
from tests.served import Capture, CapturedProject

TUMOR_MODEL = "tumor"

TUMOR_CELLS = [
    "%load_ext nb2prod\n%nb2prod start tumor",
    """import json
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

frame = load_breast_cancer(as_frame=True).frame
rng = np.random.default_rng(0)
n = len(frame)
sites = ["clinic-a", "clinic-b", "clinic-c"]
frame.insert(0, "site", pd.Categorical(rng.choice(sites, n), categories=sites))
frame.insert(1, "screened", rng.random(n) < 0.4)
frame.insert(2, "visits", rng.integers(0, 12, n).astype("int64"))
bmi = rng.normal(26, 4, n)
bmi[rng.random(n) < 0.1] = np.nan
frame.insert(3, "bmi", bmi)
train, test = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame.target)""",
    "%nb2prod data train --role train --target target",
    """X = train.drop(columns="target")
pre = ColumnTransformer(
    [("site", OneHotEncoder(handle_unknown="ignore"), ["site"]), ("bmi", SimpleImputer(), ["bmi"])],
    remainder="passthrough",
)
clf = make_pipeline(pre, StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, train.target)""",
    "%nb2prod model clf --name tumor",
    """X_test = test.drop(columns="target")
rows = json.loads(X_test.astype({"site": str}).to_json(orient="records"))
with open("expected.json", "w") as fh:
    json.dump({"rows": rows, "prediction": clf.predict(X_test).tolist(),
               "proba": clf.predict_proba(X_test).tolist(), "classes": clf.classes_.tolist()}, fh)""",
]


def _capture_tumor(project: CapturedProject) -> None:
    """``tumor`` v1 registered from a real kernel, then exported; ``data``: expected, exported."""
    from nb2prod.export import export_model

    notebook = make_notebook(project.home / "notebooks" / "tumor.ipynb", TUMOR_CELLS)
    run_notebook(notebook, project.home)
    project.data["expected"] = json.loads((notebook.parent / "expected.json").read_text())
    project.data["exported"] = export_model(TUMOR_MODEL, settings=project.settings)


TUMOR = Capture(key="tumor", run=_capture_tumor)
