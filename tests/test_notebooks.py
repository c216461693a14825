"""Notebooks in real kernels (nbclient) against a temporary MLflow SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_notebook, outputs_text, run_notebook

pytestmark = pytest.mark.slow

SECRET = "hunter2-very-secret-value"


def _artifact(client: Any, run_id: str, path: str) -> str:
    return Path(client.download_artifacts(run_id, path)).read_text(encoding="utf-8")


def test_example_notebook_records_environment_data_and_model(project: Path, client: Any) -> None:
    import mlflow
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nb2prod.capture.hashing import digest_frame
    from nb2prod.capture.notebook import code_digest
    from nb2prod.demo import write_example

    notebook = write_example(project / "notebooks" / "train.ipynb")
    nb = run_notebook(notebook, project, {"NB2PROD_TEST_TOKEN": SECRET})

    experiment = client.get_experiment_by_name("breast-cancer")
    assert experiment.artifact_location.startswith((project / ".nb2prod" / "artifacts").as_uri())
    (run,) = client.search_runs([experiment.experiment_id])
    tags = run.data.tags
    assert tags["nb2prod.notebook"] == str(notebook)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    assert tags["nb2prod.notebook_digest"] == code_digest(sources)[0]

    env_text = _artifact(client, run.info.run_id, "environment.json")
    env = json.loads(env_text)
    assert SECRET not in env_text and "NB2PROD_TEST_TOKEN" in env["env_var_names"]
    assert env["python_version"].startswith("3.")
    assert "scikit-learn" in env["imported"] and "pandas" in env["imported"]
    assert tags["nb2prod.env_digest"] == env["digest"]
    requirements = _artifact(client, run.info.run_id, "requirements.txt")
    assert f"scikit-learn=={env['distributions']['scikit-learn']}" in requirements

    # The kernel's digests equal ours for the same data, computed in this (another) process.
    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame.target)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "test"}
    assert tags["nb2prod.data.train.digest"] == digest_frame(train)
    assert tags["nb2prod.data.test.digest"] == digest_frame(test)
    assert inputs["train"].dataset.digest == digest_frame(train).split(":")[1]

    mv = client.get_model_version("breast-cancer", "1")
    assert mv.run_id == run.info.run_id
    assert mv.tags["nb2prod.data.dataset.train.digest"] == digest_frame(train)
    assert mv.tags["nb2prod.data.X.digest"] == digest_frame(train.drop(columns="target"))
    assert mv.tags["nb2prod.notebook_digest"] == tags["nb2prod.notebook_digest"]
    model = mlflow.pyfunc.load_model("models:/breast-cancer/1")
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    reference.fit(train.drop(columns="target"), train.target)
    features = test.drop(columns="target")
    assert (model.predict(features) == reference.predict(features)).all()
    assert run.data.metrics["test_accuracy"] > 0.9

    status_cell = nb.cells[-1]
    bundle = next(o for o in status_cell.outputs if o["output_type"] == "display_data")["data"]
    # saved with the notebook: HTML and text, no widget that a reload could not show
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert run.info.run_id in bundle["text/plain"] and "models:/breast-cancer/1" in bundle["text/plain"]
    assert run.info.run_id in bundle["text/html"] and "models:/breast-cancer/1" in bundle["text/html"]


def _fake_dist(site: Path, version: str) -> None:
    for old in site.glob("fakepkg_nb2prod-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"fakepkg_nb2prod-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg-nb2prod\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakepkg_nb2prod\n")
    (site / "fakepkg_nb2prod").mkdir(exist_ok=True)
    (site / "fakepkg_nb2prod" / "__init__.py").write_text(f"VERSION = {version!r}\n")


def test_rerun_lists_environment_changes(project: Path, client: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    notebook = make_notebook(
        project / "env.ipynb", ["import fakepkg_nb2prod\n%load_ext nb2prod\n%nb2prod start envcheck"]
    )
    _fake_dist(site, "1.0")
    first = run_notebook(notebook, project, {"PYTHONPATH": str(site)})
    assert "first recorded run of this notebook" in outputs_text(first.cells[0])

    _fake_dist(site, "2.0")
    second = run_notebook(notebook, project, {"PYTHONPATH": str(site)})
    text = outputs_text(second.cells[0])
    assert "fakepkg-nb2prod 1.0 → 2.0 (upgraded) [imported]" in text

    runs = client.search_runs(
        [client.get_experiment_by_name("envcheck").experiment_id], order_by=["attributes.start_time DESC"]
    )
    latest, earlier = runs[0], runs[1]
    assert latest.data.tags["nb2prod.previous_run"] == earlier.info.run_id
    diff = json.loads(_artifact(client, latest.info.run_id, "environment_diff.json"))
    assert diff["changed"] == [{"kind": "upgraded", "name": "fakepkg-nb2prod", "new": "2.0", "old": "1.0"}]
    env = json.loads(_artifact(client, latest.info.run_id, "environment.json"))
    assert env["imported"]["fakepkg-nb2prod"] == "2.0"


def test_notebook_class_model_is_refused_without_traceback(project: Path, client: Any) -> None:
    notebook = make_notebook(
        project / "custom.ipynb",
        [
            "%load_ext nb2prod\n%nb2prod start custom",
            "from sklearn.base import BaseEstimator, TransformerMixin\n"
            "from sklearn.datasets import load_wine\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from sklearn.pipeline import make_pipeline\n"
            "class Doubler(TransformerMixin, BaseEstimator):\n"
            "    def fit(self, X, y=None):\n        return self\n"
            "    def transform(self, X):\n        return X * 2\n"
            "X, y = load_wine(return_X_y=True, as_frame=True)\n"
            "pipe = make_pipeline(Doubler(), LogisticRegression(max_iter=5000)).fit(X, y)",
            "%nb2prod model pipe --X X --y y --name wine",
            "print('still working', 1 + 1)",
        ],
    )
    nb = run_notebook(notebook, project, allow_errors=True)
    (error,) = [o for o in nb.cells[2].outputs if o["output_type"] == "error"]
    rendered = "\n".join(error["traceback"])
    assert "__main__.Doubler" in rendered and "defined in the notebook itself" in rendered
    assert "move the class into a .py module" in rendered
    assert "Traceback" not in rendered and "File " not in rendered
    assert "still working 2" in outputs_text(nb.cells[3])
    assert client.search_registered_models() == []
