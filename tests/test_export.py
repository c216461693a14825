"""Export a registered model as a Bento and serve it for real: ``bentoml serve`` on 127.0.0.1.

One notebook, run in a real kernel, trains and captures a classifier on the breast cancer
data with four added columns of other kinds (a category, a bool, an int, a float with
missing values), so the input contract has every rule to break. One server is started for
the module; the tampered-artifact test starts its own from a copy of the store.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nb2prod.exceptions import ExportError
from tests.helpers import make_notebook, run_notebook

MODEL = "tumor"

NOTEBOOK_CELLS = [
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


@dataclass
class Project:
    home: Path
    expected: dict[str, Any]
    settings: Any


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    store: Path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, store_template: Path) -> Iterator[Project]:
    """A project whose notebook ran in a real kernel and registered ``tumor`` v1."""
    from mlflow.tracking._model_registry import utils as mlflow_registry
    from mlflow.tracking._tracking_service import utils as mlflow_uri

    from nb2prod.config import load_settings
    from nb2prod.demo import new_project

    home = new_project(tmp_path_factory.mktemp("export") / "project")
    (home / ".nb2prod").mkdir()
    shutil.copy(store_template, home / ".nb2prod" / "mlflow.db")
    # export (through nb2prod.tracking.client) sets MLflow's process-global tracking and registry
    # URIs (and their env vars); the modules that run after this one in the same worker must not
    # inherit this module's store
    global_uris = (mlflow_uri._tracking_uri, mlflow_registry._registry_uri)
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NB2PROD_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}")
        mp.delenv("BENTOML_HOME", raising=False)
        mp.delenv("NB2PROD_PREDICTION_STORE", raising=False)
        mp.chdir(home)
        notebook = make_notebook(home / "notebooks" / "tumor.ipynb", NOTEBOOK_CELLS)
        run_notebook(notebook, home)
        expected = json.loads((notebook.parent / "expected.json").read_text())
        try:
            yield Project(home=home, expected=expected, settings=load_settings(home))
        finally:
            mlflow_uri._tracking_uri, mlflow_registry._registry_uri = global_uris
            for key, value in env_before.items():  # MLflow wrote them to os.environ itself
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="module")
def exported(project: Project) -> Any:
    from nb2prod.export import export_model

    return export_model(MODEL, settings=project.settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _post(
    url: str,
    body: bytes,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST", headers=dict(headers or {}))
    if content_type is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}


def _start(settings: Any, tag: str | None, store: Path, log: Path, home: Path | None = None) -> Server:
    from nb2prod.export import serve_command

    port = _free_port()
    cmd = serve_command(MODEL, port=port, settings=settings, tag=tag)
    env = dict(cmd.env, NB2PROD_PREDICTION_STORE=str(store))
    if home is not None:
        env["BENTOML_HOME"] = str(home)
    handle = log.open("wb")
    proc = subprocess.Popen(cmd.argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Server(url=f"http://127.0.0.1:{port}", proc=proc, log=log, store=store)


def _wait_ready(server: Server, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"bentoml serve exited: {server.log.read_text()[-2000:]}")
        if _get(server.url + "/readyz", timeout=2)[0] == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"not ready after {timeout} s: {server.log.read_text()[-2000:]}")


def _stop(server: Server) -> None:
    # bentoml's workers run in their own sessions: SIGTERM the serve process, it stops them.
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(project: Project, exported: Any) -> Iterator[Server]:
    """``nb2prod serve tumor --port P``: the CLI execs ``bentoml serve`` on the newest Bento."""
    port = _free_port()
    log = project.home / "serve.log"
    env = dict(
        os.environ,
        NB2PROD_HOME=str(project.home),
        MLFLOW_TRACKING_URI=f"sqlite:///{project.home / '.nb2prod' / 'mlflow.db'}",
    )
    for name in ("BENTOML_HOME", "NB2PROD_PREDICTION_STORE"):
        env.pop(name, None)
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nb2prod", "serve", MODEL, "--port", str(port)],
            env=env,
            cwd=project.home,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    # the default prediction store of `nb2prod serve`: inside the project home
    store = project.home / ".nb2prod" / "serving" / MODEL / "predictions.db"
    srv = Server(url=f"http://127.0.0.1:{port}", proc=proc, log=log, store=store)
    try:
        _wait_ready(srv)
        yield srv
    finally:
        _stop(srv)


def _row(project: Project, i: int = 0) -> dict[str, Any]:
    return dict(project.expected["rows"][i])


# ---------------------------------------------------------------------------------------------- export


def test_import_nb2prod_and_export_stay_light() -> None:
    code = "import sys, nb2prod, nb2prod.export; print(sorted(m for m in ('bentoml', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_export_writes_reviewable_source_and_a_pinned_bento(project: Project, exported: Any) -> None:
    import sklearn

    assert exported.built
    assert exported.tag.startswith("tumor:v1-")
    src = project.home / "bentos" / MODEL
    assert exported.source_dir == src
    for name in ("service.py", "bentofile.yaml", "nb2prod_manifest.json", "_nb2prod_serving/guard.py"):
        assert (src / name).is_file(), name
    bentofile = (src / "bentofile.yaml").read_text()
    assert "lock_packages: false" in bentofile
    assert f'"scikit-learn=={sklearn.__version__}"' in bentofile
    manifest = json.loads((src / "nb2prod_manifest.json").read_text())
    assert [c["name"] for c in manifest["schema"]][:4] == ["site", "screened", "visits", "bmi"]
    assert "target" not in {c["name"] for c in manifest["schema"]}
    assert manifest["reference"]["mean radius"]["drift_fractions"]
    assert manifest["provenance"]["run_id"]
    assert manifest["model"]["artifact_sha256"]["MLmodel"].startswith("sha256:")
    store = exported.bentoml_home
    assert store == project.home / ".nb2prod" / "bentoml"
    version = exported.tag.split(":")[1]
    assert (store / "bentos" / MODEL / version / "bento.yaml").is_file()
    model_version = exported.model_tag.split(":")[1]
    assert (store / "models" / MODEL / model_version / "mlflow" / "model.skops").is_file()


@pytest.mark.slow
def test_same_export_twice_is_a_noop_with_the_same_tag(project: Project, exported: Any) -> None:
    from nb2prod.export import export_model

    again = export_model(f"{MODEL}/1", settings=project.settings)
    assert again.tag == exported.tag
    assert not again.built
    versions = [p.name for p in (exported.bentoml_home / "bentos" / MODEL).iterdir() if p.is_dir()]
    assert versions == [exported.tag.split(":")[1]]


@pytest.mark.slow
def test_alias_resolves_to_the_same_bento(project: Project, exported: Any) -> None:
    import mlflow

    from nb2prod.export import export_model

    uri = project.settings.tracking_uri
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(MODEL, "champion", "1")
    via_alias = export_model(f"{MODEL}@champion", settings=project.settings)
    assert via_alias.tag == exported.tag and not via_alias.built
    assert via_alias.alias == "champion" and via_alias.model_version == "1"
    with pytest.raises(ExportError, match="tumor@nobody"):
        export_model(f"{MODEL}@nobody", settings=project.settings)


def test_unknown_model_and_version_are_export_errors(project: Project) -> None:
    from nb2prod.export import export_model

    with pytest.raises(ExportError, match="no registered model named 'nope'"):
        export_model("nope", settings=project.settings)
    with pytest.raises(ExportError, match="tumor/9"):
        export_model("tumor/9", settings=project.settings)
    with pytest.raises(ExportError, match="cannot read model reference"):
        export_model("tumor@@x", settings=project.settings)


def _cli(*args: str, home: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ, NB2PROD_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    )
    env.pop("BENTOML_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "nb2prod", *args],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _remove_bento(exported: Any) -> Path:
    path = exported.bentoml_home / "bentos" / MODEL / exported.tag.split(":")[1]
    shutil.rmtree(path)
    return path


@pytest.mark.slow
def test_concurrent_exports_build_one_bento(project: Project, exported: Any) -> None:
    path = _remove_bento(exported)
    procs = [_cli("export", MODEL, home=project.home) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    texts = sorted(out for out, _ in outs)
    assert sum("already built" in t for t in texts) == 1, texts
    assert sum(f"{exported.tag} built" in t for t in texts) == 1, texts
    assert (path / "bento.yaml").is_file()
    assert [p.name for p in path.parent.iterdir() if p.is_dir()] == [path.name]


@pytest.mark.slow
def test_killed_export_leaves_no_half_built_bento(project: Project, exported: Any) -> None:
    path = _remove_bento(exported)
    home = exported.bentoml_home
    before = set(home.glob(".staging-*"))
    proc = _cli("export", MODEL, home=project.home)
    deadline = time.monotonic() + 120
    while not (set(home.glob(".staging-*")) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(home.glob(".staging-*")) - before, "the export never started building"
    time.sleep(1.0)  # in the middle of BentoML's build
    os.killpg(proc.pid, signal.SIGKILL)  # the export and its build child: our own process group
    proc.wait(timeout=10)
    assert not path.exists(), "a killed export left something under the final tag"
    from nb2prod.export import export_model

    again = export_model(MODEL, settings=project.settings)
    assert again.built and again.tag == exported.tag
    assert (path / "bento.yaml").is_file()
    assert not list(home.glob(f".staging-{MODEL}-*")), "the killed export's staging was not cleaned"


@pytest.mark.slow
def test_output_writes_a_portable_archive(project: Project, exported: Any, tmp_path: Path) -> None:
    import tarfile

    from nb2prod.export import export_model

    result = export_model(MODEL, settings=project.settings, output=tmp_path / "tumor.bento")
    assert result.archive == tmp_path / "tumor.bento" and not result.built
    with tarfile.open(result.archive) as archive:
        names = archive.getnames()
    assert "bento.yaml" in names or "./bento.yaml" in names
    assert any(n.endswith("mlflow/model.skops") for n in names), "the archive does not carry the model"
    with pytest.raises(ExportError, match=r"does not end in \.bento"):
        export_model(MODEL, settings=project.settings, output=tmp_path / "tumor.tar")


@pytest.mark.slow
def test_export_refuses_an_artifact_changed_after_capture(project: Project, exported: Any) -> None:
    from nb2prod.export import export_model

    [skops] = list((project.home / ".nb2prod" / "artifacts").rglob("model.skops"))
    original = skops.read_bytes()
    try:
        skops.write_bytes(original + b"\0")
        with pytest.raises(ExportError, match=r"model file model\.skops of tumor/1 differs"):
            export_model(MODEL, settings=project.settings)
    finally:
        skops.write_bytes(original)


def test_serve_without_a_bento_is_a_clear_error(tmp_path: Path) -> None:
    from nb2prod.demo import new_project

    home = new_project(tmp_path / "empty")
    proc = _cli("serve", "nothing-here", "--port", "1", home=home)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no Bento of 'nothing-here'" in err and "nb2prod export nothing-here" in err


# ---------------------------------------------------------------------------------------------- runtime units


def test_verify_tree_names_the_changed_missing_or_unknown_file(tmp_path: Path) -> None:
    from nb2prod.serving.integrity import IntegrityError, sha256_tree, verify_tree

    (tmp_path / "sub").mkdir()
    (tmp_path / "MLmodel").write_text("flavors: {}")
    (tmp_path / "sub" / "model.skops").write_bytes(b"abc")
    recorded = sha256_tree(tmp_path)
    verify_tree(tmp_path, recorded)
    (tmp_path / "sub" / "model.skops").write_bytes(b"abd")
    with pytest.raises(IntegrityError, match=r"file sub/model\.skops has sha256:"):
        verify_tree(tmp_path, recorded)
    (tmp_path / "sub" / "model.skops").write_bytes(b"abc")
    (tmp_path / "extra.py").write_text("import os")
    with pytest.raises(IntegrityError, match=r"extra\.py is not among the files recorded"):
        verify_tree(tmp_path, recorded)
    (tmp_path / "extra.py").unlink()
    (tmp_path / "MLmodel").unlink()
    with pytest.raises(IntegrityError, match="MLmodel recorded at capture is missing"):
        verify_tree(tmp_path, recorded)
    with pytest.raises(IntegrityError, match="no artifact hashes"):
        verify_tree(tmp_path, {})


def test_psi_is_zero_on_the_reference_and_large_on_a_shift() -> None:
    from nb2prod.serving.drift import column_psi

    profile = {"drift_edges": ["-inf", 1.0, 2.0, 3.0, "inf"], "drift_fractions": [0.25, 0.25, 0.25, 0.25]}
    same = [0.5, 1.5, 2.5, 3.5] * 50
    assert column_psi(profile, same) < 0.01
    assert column_psi(profile, [3.5] * 200) > 2.0
    assert column_psi(profile, [None] * 10) is None
    cats = {"frequencies": {"a": 0.5, "b": 0.5, "__other__": 0.0}}
    assert column_psi(cats, ["a", "b"] * 100) < 0.01
    assert column_psi(cats, ["z"] * 200) > 2.0


def test_row_model_rules_follow_the_training_data() -> None:
    from pydantic import ValidationError

    from nb2prod.serving.schema import row_model

    schema = [
        {"name": "x", "kind": "float", "dtype": "float64", "nullable": False},
        {"name": "m", "kind": "float", "dtype": "float64", "nullable": True},
        {"name": "c", "kind": "category", "dtype": "category", "nullable": False, "categories": ["a", "b"]},
    ]
    row = row_model(schema, {"m": {"n_infinite": 0}})
    row(x=1.0, m=None, c="a")
    row(x=1, m=float("nan"), c="b")  # a missing value in a column that had missing values
    for bad in (
        {"x": float("nan"), "m": 1.0, "c": "a"},
        {"x": 1.0, "m": float("inf"), "c": "a"},
        {"x": "1.0", "m": 1.0, "c": "a"},
        {"x": 1.0, "m": 1.0, "c": "z"},
        {"x": 1.0, "m": 1.0, "c": "a", "y": 2},
        {"m": 1.0, "c": "a"},
    ):
        with pytest.raises(ValidationError):
            row(**bad)


def test_monitor_queue_counts_what_it_drops(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import _Writer
    from nb2prod.serving.store import connect

    dropped: list[int] = []
    writer = _Writer(str(tmp_path / "p.db"), maxsize=2, on_drop=dropped.append, on_write=None)
    writer.close()  # the drain thread is gone: the queue fills up
    for i in range(5):
        writer.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    assert writer.dropped == 3 and sum(dropped) == 3
    live = _Writer(str(tmp_path / "q.db"), maxsize=100, on_drop=None, on_write=None)
    for i in range(50):
        live.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    live.close()
    conn = connect(tmp_path / "q.db")
    assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 50
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_prediction_store_through_a_sqlalchemy_url(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import _Writer, recent

    url = f"sqlite+pysqlite:///{tmp_path / 'sa.db'}"  # the SQLAlchemy path, as for PostgreSQL
    writer = _Writer(url, maxsize=100, on_drop=None, on_write=None)
    for i in range(7):
        writer.put((f"r{i}", float(i), "m", "1", json.dumps({"x": i}), json.dumps({"prediction": i % 2})))
    writer.close()
    assert writer.written == 7 and writer.dropped == 0
    rows = recent(url, 5)
    assert [json.loads(f)["x"] for f, _ in rows] == [6, 5, 4, 3, 2]


# ---------------------------------------------------------------------------------------------- serving


@pytest.mark.slow
def test_predictions_equal_the_notebook_model(project: Project, server: Server) -> None:
    import bentoml

    exp = project.expected
    with bentoml.SyncHTTPClient(server.url) as client:
        out = client.predict(rows=exp["rows"])
    assert [o["prediction"] for o in out] == exp["prediction"]
    for got, want in zip(out, exp["proba"], strict=True):
        probs = [got["probabilities"][str(c)] for c in exp["classes"]]
        assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(probs, want, strict=True))
    # every row of a batch has its own id (feedback names rows): the request's id plus -i
    ids = [o["request_id"] for o in out]
    stem = ids[0].rsplit("-", 1)[0]
    assert ids == [f"{stem}-{i}" for i in range(len(out))]
    assert {o["model_version"] for o in out} == {"1"}


@pytest.mark.slow
def test_one_row_over_raw_http_has_a_request_id(project: Project, server: Server) -> None:
    status, body, headers = _post(server.url + "/predict", json.dumps(_row(project, 3)).encode())
    assert status == 200
    out = json.loads(body)
    assert len(out) == 1 and out[0]["prediction"] == project.expected["prediction"][3]
    assert set(out[0]["probabilities"]) == {"0", "1"}
    assert out[0]["request_id"] == headers["x-request-id"]
    status, body, headers = _post(
        server.url + "/predict", json.dumps([_row(project, 3)]).encode(), headers={"X-Request-ID": "abc-123"}
    )
    assert status == 200 and json.loads(body)[0]["request_id"] == "abc-123" == headers["x-request-id"]


def _with(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in changes.items():
        out[key.replace("_", " ")] = value
    return out


def _raw(row: dict[str, Any], column: str, literal: str) -> bytes:
    """A row as JSON with ``column`` set to a raw JSON literal (NaN, Infinity, a huge number)."""
    marker = "__RAW__"
    text = json.dumps(dict(row, **{column: marker}))
    return text.replace(f'"{marker}"', literal).encode()


SECRET = "S3CRET-PAYLOAD"


def bad_cases(row: dict[str, Any]) -> list[tuple[str, bytes, str | None, int, str, str | None]]:
    """(id, body, content type, status, reason, field named in the message)."""
    dump = lambda x: json.dumps(x).encode()  # noqa: E731
    no_radius = {k: v for k, v in row.items() if k != "mean radius"}
    return [
        ("malformed-json", b'{"site": "clinic-a", ', "application/json", 400, "malformed_json", None),
        ("wrong-content-type", dump(row), "text/plain", 415, "content_type", None),
        ("no-content-type", dump(row), None, 415, "content_type", None),
        ("form-content-type", dump(row), "application/x-www-form-urlencoded", 415, "content_type", None),
        ("empty-body", b"", "application/json", 400, "empty_body", None),
        ("blank-body", b"  \n ", "application/json", 400, "empty_body", None),
        ("missing-field", dump(no_radius), "application/json", 422, "missing_field", "mean radius"),
        ("extra-field", dump(dict(row, zzz_extra=1.0)), "application/json", 422, "extra_field", "zzz_extra"),
        (
            "string-in-float",
            dump(_with(row, mean_radius=SECRET)),
            "application/json",
            422,
            "type",
            "mean radius",
        ),
        (
            "numeric-string-in-float",
            dump(_with(row, mean_radius="12.5")),
            "application/json",
            422,
            "type",
            "mean radius",
        ),
        ("nan", _raw(row, "mean radius", "NaN"), "application/json", 422, "not_finite", "mean radius"),
        ("inf", _raw(row, "mean radius", "Infinity"), "application/json", 422, "not_finite", "mean radius"),
        ("inf-in-nullable", _raw(row, "bmi", "-Infinity"), "application/json", 422, "not_finite", "bmi"),
        ("huge-float", _raw(row, "mean area", "1e999"), "application/json", 422, "not_finite", "mean area"),
        (
            "null-non-nullable",
            dump(_with(row, mean_radius=None)),
            "application/json",
            422,
            "null",
            "mean radius",
        ),
        ("unseen-category", dump(dict(row, site=SECRET)), "application/json", 422, "unseen_category", "site"),
        ("category-as-number", dump(dict(row, site=1)), "application/json", 422, "unseen_category", "site"),
        ("int-for-bool", dump(dict(row, screened=1)), "application/json", 422, "type", "screened"),
        ("string-for-bool", dump(dict(row, screened="true")), "application/json", 422, "type", "screened"),
        ("float-for-int", dump(dict(row, visits=2.5)), "application/json", 422, "type", "visits"),
        (
            "int-out-of-range",
            _raw(row, "visits", str(2**70)),
            "application/json",
            422,
            "out_of_range",
            "visits",
        ),
        ("empty-batch", b"[]", "application/json", 400, "empty_batch", None),
        ("empty-rows", b'{"rows": []}', "application/json", 400, "empty_batch", None),
        ("rows-not-a-list", b'{"rows": {"a": 1}}', "application/json", 400, "not_an_object", None),
        ("top-level-string", b'"hello"', "application/json", 400, "not_an_object", None),
        ("row-not-an-object", b"[1, 2]", "application/json", 422, "type", "rows[0]"),
        (
            "bad-second-row",
            dump([row, _with(row, mean_radius="x")]),
            "application/json",
            422,
            "type",
            "rows[1].mean radius",
        ),
        ("oversized-body", dump([row] * 1500), "application/json", 413, "too_large", None),
        ("too-many-rows", dump([{"x": 1}] * 1001), "application/json", 413, "too_many_rows", None),
        (
            "pickle",
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
            "application/python-pickle",
            415,
            "pickle_refused",
            None,
        ),
        ("octet-stream", b"\x80\x04K\x01.", "application/octet-stream", 415, "pickle_refused", None),
        ("not-utf8", b'{"site": "\xff\xfe"}', "application/json", 400, "malformed_json", None),
        ("nested-too-deep", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "malformed_json", None),
    ]


@pytest.mark.slow
def test_bad_inputs_get_a_4xx_naming_the_field(project: Project, server: Server) -> None:
    row = _row(project)
    cases = bad_cases(row)
    assert len(cases) >= 20
    failures = []
    for case_id, body, ctype, status, reason, field in cases:
        got, raw, _ = _post(server.url + "/predict", body, ctype)
        try:
            payload = json.loads(raw)
        except ValueError:
            failures.append(f"{case_id}: {got} non-JSON body {raw[:200]!r}")
            continue
        problems = []
        if got != status:
            problems.append(f"status {got} != {status}")
        if payload.get("error") != "invalid_input" or payload.get("reason") != reason:
            problems.append(f"reason {payload.get('reason')} != {reason}")
        if field is not None and field not in payload.get("message", ""):
            problems.append(f"field {field!r} not named in {payload.get('message')!r}")
        if SECRET in raw.decode("utf-8", "replace") or "Traceback" in raw.decode("utf-8", "replace"):
            problems.append("payload echoed or traceback in the body")
        if problems:
            failures.append(f"{case_id}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    status, metrics = _get(server.url + "/metrics")
    assert status == 200
    text = metrics.decode()
    for reason in ("malformed_json", "unseen_category", "pickle_refused", "not_finite", "null"):
        assert f'nb2prod_invalid_input_total{{reason="{reason}"}}' in text, reason


@pytest.mark.slow
def test_metadata_carries_provenance(project: Project, server: Server, exported: Any) -> None:
    status, body = _get(server.url + "/metadata")
    assert status == 200
    meta = json.loads(body)
    assert meta["model"] == MODEL and meta["model_version"] == "1"
    assert meta["bento"] == exported.tag
    assert meta["run_id"] and meta["environment_digest"].startswith("sha256:")
    assert meta["data_digests"]["dataset:train"].startswith("xxh3_128:")
    assert meta["exported_at"] and meta["ready"] is True


def _logged_ids(store: Path) -> list[str]:
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM predictions")]
    finally:
        conn.close()


@pytest.mark.slow
def test_served_equals_logged_after_a_burst(project: Project, server: Server) -> None:
    rows = project.expected["rows"]
    ids = [f"burst-{uuid.uuid4().hex[:12]}-{i}" for i in range(240)]

    def call(i: int) -> int:
        body = json.dumps(rows[i % len(rows)]).encode()
        return _post(server.url + "/predict", body, headers={"X-Request-ID": ids[i]})[0]

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(call, range(len(ids))))
    assert statuses == [200] * len(ids)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logged = [i for i in _logged_ids(server.store) if i.startswith("burst-")]
        if len(logged) >= len(ids):
            break
        time.sleep(0.2)
    assert sorted(logged) == sorted(ids)
    text = _get(server.url + "/metrics")[1].decode()
    assert "nb2prod_monitor_dropped_total 0.0" in text


@pytest.mark.slow
def test_drift_stays_quiet_on_held_out_rows_then_moves_on_shifted_input(
    project: Project, server: Server
) -> None:
    rows = project.expected["rows"]
    for start in range(0, len(rows), 50):
        assert _post(server.url + "/predict", json.dumps(rows[start : start + 50]).encode())[0] == 200
    time.sleep(1.0)
    quiet = json.loads(_get(server.url + "/drift")[1])
    assert quiet["status"] == "ok", quiet["drifted"]
    assert quiet["window_rows"] >= 50
    assert max(v["psi"] for v in quiet["features"].values() if v["psi"] is not None) < quiet["threshold"]

    shifted = [dict(r, **{"mean radius": r["mean radius"] * 3}, site="clinic-c") for r in rows]
    for _ in range(3):
        for start in range(0, len(shifted), 50):
            assert _post(server.url + "/predict", json.dumps(shifted[start : start + 50]).encode())[0] == 200
    time.sleep(1.0)
    moved = json.loads(_get(server.url + "/drift")[1])
    assert moved["status"] == "drift"
    assert {"mean radius", "site"} <= set(moved["drifted"])
    assert moved["features"]["mean radius"]["psi"] > 1.0
    assert moved["features"]["mean texture"]["psi"] < quiet["threshold"]
    text = _get(server.url + "/metrics")[1].decode()
    assert 'nb2prod_feature_psi{feature="mean radius"}' in text


@pytest.mark.slow
def test_tampered_artifact_never_becomes_ready(project: Project, exported: Any, tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    shutil.copytree(
        exported.bentoml_home, home, ignore=shutil.ignore_patterns(".staging-*", ".nb2prod-locks")
    )
    model_dir = home / "models" / MODEL / exported.model_tag.split(":")[1] / "mlflow"
    with (model_dir / "model.skops").open("ab") as fh:
        fh.write(b"\0")
    srv = _start(project.settings, exported.tag, tmp_path / "p.db", tmp_path / "serve.log", home=home)
    try:
        deadline = time.monotonic() + 60
        saw_live = False
        while time.monotonic() < deadline:
            assert _get(srv.url + "/readyz", timeout=2)[0] != 200
            saw_live = saw_live or _get(srv.url + "/livez", timeout=2)[0] == 200
            if "integrity check failed" in srv.log.read_text(errors="replace") and saw_live:
                break
            time.sleep(0.3)
        log = srv.log.read_text(errors="replace")
        assert "integrity check failed: file model.skops has sha256:" in log
        for _ in range(5):
            assert _get(srv.url + "/readyz", timeout=2)[0] == 503
            time.sleep(0.2)
        status, _body, _ = _post(srv.url + "/predict", json.dumps(_row(project)).encode())
        assert status == 503
        meta = json.loads(_get(srv.url + "/metadata")[1])
        assert meta["ready"] is False and "model.skops" in meta["failure"]
    finally:
        _stop(srv)
