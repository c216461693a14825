"""What one notebook run in a real kernel leaves in MLflow, read back with MLflow's own client: run
parameters from the ``parameters`` cell, versions linked to their logged model, metrics linked to
the datasets they were computed on, file hashes as an artifact, version descriptions, the first
version as champion, identical re-runs said and skipped, the project's .gitignore, and the run
ended when the kernel shut down. One notebook run (module fixture) serves every test."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nb2prod.demo import new_project
from tests.helpers import make_notebook, outputs_text, run_notebook

pytestmark = pytest.mark.slow

CELLS: list[str | tuple[str, list[str]]] = [
    ('C = 1.0\nseed = 0\napi_token = "s3cret"', ["parameters"]),
    "%load_ext nb2prod\n%nb2prod start records",
    "from sklearn.datasets import load_breast_cancer\n"
    "from sklearn.model_selection import train_test_split\n"
    "frame = load_breast_cancer(as_frame=True).frame\n"
    "train, test = train_test_split(frame, test_size=0.25, random_state=seed, stratify=frame.target)\n"
    "test.drop(columns='target').to_csv('rows.csv', index=False)",
    "%nb2prod data train --role train --target target\n%nb2prod data test --role test --target target",
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.pipeline import make_pipeline\n"
    "from sklearn.preprocessing import StandardScaler\n"
    "clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))\n"
    "clf = clf.fit(train.drop(columns='target'), train.target)",
    "%nb2prod model clf --name bc",
    "%nb2prod model clf --name bc",
    "%nb2prod model clf --name bc --skip-identical",
    "%nb2prod score bc@champion rows.csv -o preds.csv --no-log",
    "C = 2.0",
    "%nb2prod status",
]


@dataclass
class Ran:
    home: Path
    nb: Any
    client: Any
    run_id: str

    def cell(self, index: int) -> str:
        return outputs_text(self.nb.cells[index])

    def bundle(self, index: int) -> dict[str, Any]:
        (data,) = [o["data"] for o in self.nb.cells[index].outputs if o["output_type"] == "display_data"]
        return dict(data)


def _git(home: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=home,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, store_template: Path) -> Ran:
    import mlflow

    home = new_project(tmp_path_factory.mktemp("records") / "project")
    path = make_notebook(home / "train.ipynb", CELLS)
    _git(home, "init", "-q")
    _git(home, "add", "pyproject.toml", "train.ipynb")
    _git(home, "commit", "-qm", "a freshly committed project")
    (home / ".nb2prod").mkdir()
    shutil.copy(store_template, home / ".nb2prod" / "mlflow.db")
    nb = run_notebook(path, home)  # nbclient shuts the kernel down at the end: no %nb2prod end
    uri = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("records").experiment_id])
    return Ran(home, nb, client, run.info.run_id)


def test_parameters_cell_values_are_run_params_and_a_later_change_is_flagged(ran: Ran) -> None:
    run = ran.client.get_run(ran.run_id)
    assert run.data.params == {"C": "1.0", "seed": "0", "api_token": "***"}
    assert "parameter C changed after the run logged it" in ran.cell(9)
    assert "parameter C changed to 2.0" in ran.bundle(10)["text/plain"]


def test_run_ends_when_the_kernel_shuts_down(ran: Ran) -> None:
    assert ran.client.get_run(ran.run_id).info.status == "FINISHED"


def test_first_version_is_champion_in_the_alias_history(ran: Ran) -> None:
    from nb2prod.tracking import registry

    assert registry.alias_version(ran.client, "bc", "champion") == "1"
    (event,) = registry.alias_history(ran.client, "bc")
    assert (event.alias, event.from_version, event.to_version) == ("champion", None, "1")
    assert "first registered version" in event.reason
    assert "it is bc@champion (first version)" in ran.bundle(5)["text/plain"]


def test_identical_rerun_is_said_and_can_skip_registering(ran: Ran) -> None:
    second, third = ran.bundle(6), ran.bundle(7)
    assert second["text/plain"].startswith("nb2prod: registered models:/bc/2")
    assert "identical   to version 1 (same code, data and metrics)" in second["text/plain"]
    assert ">identical</th>" in second["text/html"] and "to version 1 (same code" in second["text/html"]
    assert third["text/plain"].startswith("nb2prod: not registered: identical to bc version 2")
    versions = sorted(int(v.version) for v in ran.client.search_model_versions("name = 'bc'"))
    assert versions == [1, 2]


def test_versions_are_linked_to_their_logged_model_and_described(ran: Ran) -> None:
    mv = ran.client.get_model_version("bc", "1")
    model_id = mv.tags["nb2prod.model_id"]
    assert mv.source == f"models:/{model_id}" and mv.run_id == ran.run_id
    assert mv.model_id in (None, model_id)  # the SQL registry store does not keep the column
    logged = ran.client.get_logged_model(model_id)
    linked = json.loads(logged.tags["mlflow.modelVersions"])
    assert {"name": "bc", "version": "1"} in linked  # the logged model's page: "Registered"
    text = mv.description
    assert ran.run_id in text and model_id in text
    record = json.loads(Path(ran.client.download_artifacts(ran.run_id, "datasets/train.json")).read_text())
    assert record["digest"] in text and "| accuracy |" in text and "train.ipynb" in text


def test_metrics_are_linked_to_the_datasets_they_were_computed_on(ran: Ran) -> None:
    mv = ran.client.get_model_version("bc", "1")
    logged = ran.client.get_logged_model(mv.tags["nb2prod.model_id"])
    on = {m.key: (m.dataset_name, m.dataset_digest) for m in logged.metrics}
    inputs = {i.dataset.name: i.dataset.digest for i in ran.client.get_run(ran.run_id).inputs.dataset_inputs}
    assert on["training_accuracy"] == ("train", inputs["train"])
    assert on["test_accuracy"] == ("test", inputs["test"])


def test_file_hashes_are_an_artifact_named_by_one_digest_tag(
    ran: Ran, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from nb2prod.tracking.artifacts import fetch_verified, hashes_digest

    # MLflow's registry store resolves a models:/m-... source through the global tracking URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ran.client.tracking_uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)

    mv = ran.client.get_model_version("bc", "1")
    model_id = mv.tags["nb2prod.model_id"]
    hashes = json.loads(
        Path(ran.client.download_artifacts(ran.run_id, f"integrity/{model_id}.json")).read_text()
    )
    assert "MLmodel" in hashes and mv.tags["nb2prod.artifact_sha256"] == hashes_digest(hashes)
    assert ran.client.get_logged_model(model_id).tags["nb2prod.artifact_sha256"] == hashes_digest(hashes)
    verified = fetch_verified(ran.client, ran.client.tracking_uri, "bc", "1", tmp_path / "v1")
    assert verified.recorded == hashes
    # a version written before the artifact existed (the JSON in the tag) still verifies
    old_tags = dict(mv.tags, **{"nb2prod.artifact_sha256": json.dumps(hashes)})
    old = ran.client.create_model_version("bc", mv.source, run_id=ran.run_id, tags=old_tags)
    assert fetch_verified(ran.client, ran.client.tracking_uri, "bc", old, tmp_path / "old").recorded == hashes
    # a digest tag that names other hashes is refused before anything loads
    from nb2prod.exceptions import ModelIntegrityError

    bad_tags = dict(mv.tags, **{"nb2prod.artifact_sha256": "sha256:" + "0" * 64})
    bad = ran.client.create_model_version("bc", mv.source, run_id=ran.run_id, tags=bad_tags)
    with pytest.raises(ModelIntegrityError, match="do not match their digest"):
        fetch_verified(ran.client, ran.client.tracking_uri, "bc", bad, tmp_path / "bad")
    for version in (old, bad):
        ran.client.delete_model_version("bc", version.version)


def test_score_magic_scores_with_the_champion(ran: Ran) -> None:
    bundle = ran.bundle(8)
    assert bundle["text/plain"].startswith("nb2prod: scored 143 of 143 rows with bc version 1")
    assert "nb2prod-output" in bundle["text/html"]
    assert len((ran.home / "preds.csv").read_text().splitlines()) == 144


def test_gitignore_keeps_nb2prod_state_out_and_dirty_names_the_files(ran: Ran) -> None:
    lines = (ran.home / ".gitignore").read_text().splitlines()
    assert {".nb2prod/", ".ipynb_checkpoints/", "bentos/**/__pycache__/"} <= set(lines)
    assert "bentos/" not in lines  # the service source is for review and commit
    env = json.loads(Path(ran.client.download_artifacts(ran.run_id, "environment.json")).read_text())
    # .nb2prod/ (the store) no longer makes it dirty; the .gitignore nb2prod just wrote does, by name
    assert env["git"]["dirty_files"] == [".gitignore"]
    assert "added .nb2prod/" in ran.bundle(1)["text/plain"] and "commit it" in ran.bundle(1)["text/plain"]
    assert "dirty: .gitignore" in ran.bundle(1)["text/plain"]
