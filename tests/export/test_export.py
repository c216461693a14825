"""Export a registered model as a Bento: the reviewable source, the pinned Bento, the store's rules.

The project is the shared ``TUMOR`` capture (tests/captures.py): a notebook run in a real
kernel registered ``tumor`` v1, which was then exported once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nb2prod.exceptions import ExportError, ModelIntegrityError
from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject

CAPTURE = TUMOR
MODEL = TUMOR_MODEL


def test_import_nb2prod_and_export_stay_light() -> None:
    code = "import sys, nb2prod, nb2prod.export; print(sorted(m for m in ('bentoml', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_export_writes_reviewable_source_and_a_pinned_bento(
    captured_project: CapturedProject, exported: Any
) -> None:
    import sklearn

    assert exported.built
    assert exported.tag.startswith("tumor:v1-")
    src = captured_project.home / "bentos" / MODEL
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
    assert store == captured_project.home / ".nb2prod" / "bentoml"
    version = exported.tag.split(":")[1]
    assert (store / "bentos" / MODEL / version / "bento.yaml").is_file()
    model_version = exported.model_tag.split(":")[1]
    assert (store / "models" / MODEL / model_version / "mlflow" / "model.skops").is_file()


@pytest.mark.slow
def test_the_manifest_file_is_the_typed_manifest_byte_for_byte(
    captured_project: CapturedProject, exported: Any
) -> None:
    from nb2prod.export import bento_store
    from nb2prod.serving.manifest import FORMAT, Manifest

    for path in (
        captured_project.home / "bentos" / MODEL / "nb2prod_manifest.json",
        bento_store.manifest_path(exported.bentoml_home, exported.tag),
    ):
        text = path.read_text(encoding="utf-8")
        manifest = Manifest.load(path)
        assert manifest.to_json() == text
        assert (
            json.dumps(Manifest.from_dict(json.loads(text)).to_dict(), indent=2, sort_keys=True) + "\n"
            == text
        )
    assert manifest.format == FORMAT and manifest.bento_version == exported.tag.split(":")[1]
    assert manifest.carried()["1"].bento_model_tag == exported.model_tag
    assert manifest.columns[:4] == ["site", "screened", "visits", "bmi"]
    assert manifest.kinds["site"] == "category" and manifest.kinds["visits"] == "int"


@pytest.mark.slow
def test_same_export_twice_is_a_noop_with_the_same_tag(
    captured_project: CapturedProject, exported: Any
) -> None:
    from nb2prod.export import export_model

    again = export_model(f"{MODEL}/1", settings=captured_project.settings)
    assert again.tag == exported.tag
    assert not again.built
    versions = [p.name for p in (exported.bentoml_home / "bentos" / MODEL).iterdir() if p.is_dir()]
    assert versions == [exported.tag.split(":")[1]]


@pytest.mark.slow
def test_alias_resolves_to_the_same_bento(captured_project: CapturedProject, exported: Any) -> None:
    import mlflow

    from nb2prod.export import export_model

    uri = captured_project.settings.tracking_uri
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(MODEL, "champion", "1")
    via_alias = export_model(f"{MODEL}@champion", settings=captured_project.settings)
    assert via_alias.tag == exported.tag and not via_alias.built
    assert via_alias.alias == "champion" and via_alias.model_version == "1"
    with pytest.raises(ExportError, match="tumor@nobody"):
        export_model(f"{MODEL}@nobody", settings=captured_project.settings)


def test_unknown_model_and_version_are_export_errors(captured_project: CapturedProject) -> None:
    from nb2prod.export import export_model

    with pytest.raises(ExportError, match="no registered model named 'nope'"):
        export_model("nope", settings=captured_project.settings)
    with pytest.raises(ExportError, match="tumor/9"):
        export_model("tumor/9", settings=captured_project.settings)
    with pytest.raises(ExportError, match="cannot read model reference"):
        export_model("tumor@@x", settings=captured_project.settings)


def _remove_bento(exported: Any) -> Path:
    path = exported.bentoml_home / "bentos" / MODEL / exported.tag.split(":")[1]
    shutil.rmtree(path)
    return path


@pytest.mark.slow
def test_concurrent_exports_build_one_bento(captured_project: CapturedProject, exported: Any) -> None:
    path = _remove_bento(exported)
    procs = [captured_project.cli_popen("export", MODEL) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    texts = sorted(out for out, _ in outs)
    assert sum("already built" in t for t in texts) == 1, texts
    assert sum(f"{exported.tag} built" in t for t in texts) == 1, texts
    assert (path / "bento.yaml").is_file()
    assert [p.name for p in path.parent.iterdir() if p.is_dir()] == [path.name]


@pytest.mark.slow
def test_killed_export_leaves_no_half_built_bento(captured_project: CapturedProject, exported: Any) -> None:
    path = _remove_bento(exported)
    home = exported.bentoml_home
    before = set(home.glob(".staging-*"))
    proc = captured_project.cli_popen("export", MODEL)
    deadline = time.monotonic() + 120
    while not (set(home.glob(".staging-*")) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(home.glob(".staging-*")) - before, "the export never started building"
    time.sleep(1.0)  # in the middle of BentoML's build
    os.killpg(proc.pid, signal.SIGKILL)  # the export and its build child: our own process group
    proc.wait(timeout=10)
    assert not path.exists(), "a killed export left something under the final tag"
    from nb2prod.export import export_model

    again = export_model(MODEL, settings=captured_project.settings)
    assert again.built and again.tag == exported.tag
    assert (path / "bento.yaml").is_file()
    assert not list(home.glob(f".staging-{MODEL}-*")), "the killed export's staging was not cleaned"


@pytest.mark.slow
def test_output_writes_a_portable_archive(
    captured_project: CapturedProject, exported: Any, tmp_path: Path
) -> None:
    import tarfile

    from nb2prod.export import export_model

    result = export_model(MODEL, settings=captured_project.settings, output=tmp_path / "tumor.bento")
    assert result.archive == tmp_path / "tumor.bento" and not result.built
    with tarfile.open(result.archive) as archive:
        names = archive.getnames()
    assert "bento.yaml" in names or "./bento.yaml" in names
    assert any(n.endswith("mlflow/model.skops") for n in names), "the archive does not carry the model"
    with pytest.raises(ExportError, match=r"does not end in \.bento"):
        export_model(MODEL, settings=captured_project.settings, output=tmp_path / "tumor.tar")


@pytest.mark.slow
def test_export_refuses_an_artifact_changed_after_capture(
    captured_project: CapturedProject, exported: Any
) -> None:
    from nb2prod.export import export_model

    [skops] = list((captured_project.home / ".nb2prod" / "artifacts").rglob("model.skops"))
    original = skops.read_bytes()
    try:
        skops.write_bytes(original + b"\0")
        # the one verified-model path refuses it, with its own error type
        with pytest.raises(ModelIntegrityError, match=r"model file model\.skops of tumor/1 differs"):
            export_model(MODEL, settings=captured_project.settings)
    finally:
        skops.write_bytes(original)


def test_serve_without_a_bento_is_a_clear_error(tmp_path: Path) -> None:
    from nb2prod.demo import new_project

    home = new_project(tmp_path / "empty")
    proc = CapturedProject(home=home, settings=None).cli_popen("serve", "nothing-here", "--port", "1")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no Bento of 'nothing-here'" in err and "nb2prod export nothing-here" in err
