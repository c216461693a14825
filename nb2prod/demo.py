"""``nb2prod demo``: the whole loop on a dataset bundled with scikit-learn.

The example notebook is built here (one source of truth); ``notebooks/train.ipynb``
in the repository is written from :func:`example_notebook` and a test keeps the two equal.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod import protocol
from nb2prod.exceptions import Nb2ProdError
from nb2prod.tracking import names

if TYPE_CHECKING:
    from nb2prod.execute import Reproduction, RunResult
    from nb2prod.lifecycle import Decision, Switch
    from nb2prod.monitoring.report import MonitorReport

EXAMPLE_NAME = "train.ipynb"

_CELLS: list[tuple[str, str, list[str]]] = [
    (
        "markdown",
        "# Breast cancer classifier\n\n"
        "Trains a logistic regression on scikit-learn's bundled breast cancer data. "
        "`nb2prod` records the environment, the exact data, and the fitted model in MLflow "
        "while the notebook runs, and registers the model once a fresh process has loaded it.",
        [],
    ),
    (
        "code",
        "# Parameters: papermill (and `nb2prod run -p NAME VALUE`) overrides these.\n"
        'experiment = "breast-cancer"\n'
        'model_name = "breast-cancer"\n'
        "C = 1.0\n"
        "test_size = 0.25\n"
        "seed = 42",
        ["parameters"],
    ),
    ("code", "%load_ext nb2prod\n%nb2prod start {experiment}", []),
    (
        "code",
        "from sklearn.datasets import load_breast_cancer\n"
        "from sklearn.model_selection import train_test_split\n\n"
        "frame = load_breast_cancer(as_frame=True).frame\n"
        "train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame.target)\n"
        "train.shape, test.shape",
        [],
    ),
    (
        "code",
        "%nb2prod data train --role train --target target\n%nb2prod data test --role test --target target",
        [],
    ),
    (
        "code",
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n\n"
        'X_train, y_train = train.drop(columns="target"), train.target\n'
        "clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))\n"
        "clf.fit(X_train, y_train)\n"
        'clf.score(test.drop(columns="target"), test.target)',
        [],
    ),
    ("code", "%nb2prod model clf --name {model_name}", []),
    ("code", "%nb2prod status", []),
]


def example_notebook() -> Any:
    """The example training notebook as an nbformat v4 notebook."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for index, (kind, source, tags) in enumerate(_CELLS):
        cell = (
            nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        )
        cell["id"] = f"cell-{index}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def write_example(path: Path) -> Path:
    """Write the example notebook to ``path``."""
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(example_notebook(), str(path))
    return path


def new_project(folder: Path) -> Path:
    """Make ``folder`` an nb2prod project (a ``pyproject.toml`` with ``[tool.nb2prod]``)."""
    folder.mkdir(parents=True, exist_ok=True)
    pyproject = folder / "pyproject.toml"
    if not pyproject.exists():
        pyproject.write_text('[tool.nb2prod]\nexperiment = "demo"\n', encoding="utf-8")
    return folder


def kernel_env(home: Path, notebook: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a kernel running a notebook of project ``home`` on its own SQLite store."""
    env = dict(os.environ)
    env[protocol.HOME] = str(home)
    env[protocol.NOTEBOOK] = str(notebook)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.update(extra or {})
    return env


def execute(notebook: Path, env: dict[str, str], timeout: int = 600) -> Any:
    """Run a notebook in a fresh kernel in its folder; returns the executed notebook.

    Raises:
        Nb2ProdError: a cell failed; the message names the cell and the error.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(str(notebook), as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    )
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        raise Nb2ProdError(f"the notebook {notebook.name} failed: {exc.ename}: {exc.evalue}") from exc
    finally:
        nbformat.write(nb, str(notebook))
    return nb


@dataclass
class DemoReport:
    """What the demo captured, read back from MLflow."""

    project: Path
    notebook: Path
    seconds: float
    run_id: str
    tracking_uri: str
    environment: dict[str, Any]
    datasets: list[dict[str, Any]] = field(default_factory=list)
    model_versions: list[dict[str, Any]] = field(default_factory=list)


def run_demo(folder: Path | None = None) -> DemoReport:
    """Execute the example notebook in a temp project and read back what was recorded."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    project = new_project(folder or Path(tempfile.mkdtemp(prefix="nb2prod-demo-")))
    notebook = write_example(project / "notebooks" / EXAMPLE_NAME)
    env = kernel_env(project, notebook)
    started = time.perf_counter()
    execute(notebook, env)
    seconds = time.perf_counter() - started

    uri = env["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("breast-cancer")
    if experiment is None:
        raise Nb2ProdError("the demo notebook ran but recorded no experiment")
    run = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    local = client.download_artifacts(run.info.run_id, names.ENVIRONMENT_JSON, dst_path=tempfile.mkdtemp())
    environment = json.loads(Path(local).read_text(encoding="utf-8"))
    datasets = [
        {
            "name": d.dataset.name,
            "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), ""),
            "digest": run.data.tags.get(names.data_digest_tag(d.dataset.name), d.dataset.digest),
        }
        for d in (run.inputs.dataset_inputs if run.inputs else [])
    ]
    versions = [
        {"name": mv.name, "version": mv.version, "tags": dict(mv.tags)}
        for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'")
    ]
    return DemoReport(
        project=project,
        notebook=notebook,
        seconds=seconds,
        run_id=run.info.run_id,
        tracking_uri=uri,
        environment=environment,
        datasets=datasets,
        model_versions=versions,
    )


@dataclass
class ServeReport:
    """What the demo's last step did: export, serve, call.

    Attributes:
        tag: The Bento built.
        source_dir: Its reviewable source (``bentos/NAME/``).
        url: Where it was served (stopped again at the end).
        predictions: The answers to a batch of rows from the dataset.
        expected: What the registered model, loaded by MLflow, predicts for those rows.
        bad_request: Status and body of a deliberately bad request.
        metadata: ``/metadata`` of the service.
        drift: ``/drift`` of the service.
        refused: The retrain decision on a deliberately weak model (refused).
        quiet: ``nb2prod monitor`` after held-out rows (no drift expected).
        drifted: ``nb2prod monitor`` after rows with an injected covariate shift.
        rollback: The champion move back to the replaced version.
        switch_seconds: How long the live service took to answer from the rolled-back version.
    """

    tag: str
    source_dir: Path
    url: str
    predictions: list[dict[str, Any]]
    expected: list[Any]
    bad_request: tuple[int, dict[str, Any]]
    metadata: dict[str, Any]
    drift: dict[str, Any]
    refused: Decision
    quiet: MonitorReport
    drifted: MonitorReport
    rollback: Switch
    switch_seconds: float | None = None


def _http(url: str, body: Any | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def serve_demo(project: Path, name: str = "breast-cancer", rows: int = 5) -> ServeReport:
    """Export the demo's registered model, serve it on a free port, call it, stop it.

    Raises:
        Nb2ProdError: the export, the server or a call failed.
    """
    import mlflow
    from sklearn.datasets import load_breast_cancer

    from nb2prod import lifecycle
    from nb2prod.config import load_settings
    from nb2prod.export import export_model, serve_command
    from nb2prod.export.serve import free_port, running

    settings = load_settings(project, tracking_uri=f"sqlite:///{project / '.nb2prod' / 'mlflow.db'}")
    # v1 (C=1) became the first champion when it was registered; a retrain with a far too strong
    # penalty is refused; v2 (the C=0.5 re-run) is promoted, so the Bento carries v2 and the v1 it
    # replaced.
    refused = lifecycle.retrain(
        name, project / "notebooks" / EXAMPLE_NAME, {"C": 0.0001}, export=False, settings=settings
    )
    lifecycle.promote(name, "2", settings=settings)
    result = export_model(f"{name}@champion", settings=settings)
    full = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    frame = full.head(rows)
    batch = [{k: float(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    model = mlflow.sklearn.load_model(f"models:/{name}/{result.model_version}")
    expected = [v.item() if hasattr(v, "item") else v for v in model.predict(frame)]
    cmd = serve_command(name, port=free_port(), settings=settings, tag=result.tag)
    with running(cmd, project / ".nb2prod" / "serving" / f"{name}.log") as server:
        status, predictions = _http(server.url + "/predict", batch)
        if status != 200:
            raise Nb2ProdError(f"the served model answered {status}: {predictions}")
        bad = _http(server.url + "/predict", dict(batch[0], **{"mean radius": "twelve"}))
        _, metadata = _http(server.url + "/metadata")
        _, drift = _http(server.url + "/drift")
        # in-distribution traffic, then traffic with an injected covariate shift
        sample = full.sample(200, random_state=7)
        labels = load_breast_cancer(as_frame=True).frame.target.loc[sample.index].tolist()
        plain = [{k: float(v) for k, v in r.items()} for r in sample.to_dict(orient="records")]
        answered: list[dict[str, Any]] = []
        for start in range(0, len(plain), 50):
            answered += _http(server.url + "/predict", plain[start : start + 50])[1]
        # the ground truth arrives later, by request id
        feedback = [
            {"request_id": a["request_id"], "label": y} for a, y in zip(answered, labels, strict=True)
        ]
        _http(server.url + "/feedback", {"labels": feedback})
        time.sleep(2.5)  # sketches are flushed each second
        quiet = lifecycle.monitor(name, settings=settings)
        shifted = [
            dict(r, **{"mean radius": r["mean radius"] * 1.5, "mean area": r["mean area"] * 2}) for r in plain
        ]
        for _ in range(2):
            for start in range(0, len(shifted), 50):
                _http(server.url + "/predict", shifted[start : start + 50])
        time.sleep(2.5)
        drifted = lifecycle.monitor(name, settings=settings)
        back = lifecycle.rollback(name, settings=settings)
        started = time.perf_counter()
        switch_seconds = None
        while time.perf_counter() - started < 10:
            _, answer = _http(server.url + "/predict", batch[:1])
            if answer[0].get("model_version") == back.active:
                switch_seconds = time.perf_counter() - started
                break
            time.sleep(0.1)
        _, metadata_after = _http(server.url + "/metadata")
    return ServeReport(
        tag=result.tag,
        source_dir=result.source_dir,
        url=server.url,
        predictions=predictions,
        expected=expected,
        bad_request=bad,
        metadata=metadata,
        drift=drift,
        refused=refused,
        quiet=quiet,
        drifted=drifted,
        rollback=back,
        switch_seconds=switch_seconds if metadata_after.get("model_version") == back.active else None,
    )


@dataclass
class RerunReport:
    """The re-execution part of the demo: a new parameter, then a reproduction of the first run."""

    rerun: RunResult
    reproduction: Reproduction


def run_rerun_demo(report: DemoReport, *, parameter: str = "C", value: float = 0.5) -> RerunReport:
    """Re-run the demo's notebook with ``parameter=value`` (``nb2prod run``), then reproduce its first run."""
    from nb2prod.config import load_settings
    from nb2prod.execute import reproduce, run_notebook

    settings = load_settings(report.project, tracking_uri=report.tracking_uri)
    rerun = run_notebook(report.notebook, {parameter: value}, settings=settings, progress=False)
    reproduction = reproduce(report.run_id, settings=settings, progress=False)
    return RerunReport(rerun=rerun, reproduction=reproduction)
