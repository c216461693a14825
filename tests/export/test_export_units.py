"""The export's parts without a store: references, options, rendering, the BentoML store layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nb2prod.config import Settings
from nb2prod.exceptions import ExportError


def test_references_and_bento_names() -> None:
    from nb2prod.export.bento_store import bento_name
    from nb2prod.export.builder import parse_ref

    assert parse_ref("churn") == ("churn", None, None)
    assert parse_ref(" churn@champion ") == ("churn", "champion", None)
    assert parse_ref("churn/12") == ("churn", None, "12")
    with pytest.raises(ExportError, match="cannot read model reference"):
        parse_ref("churn@a/1")
    assert bento_name("Breast Cancer_v2") == "breast-cancer_v2"
    with pytest.raises(ExportError, match="no usable Bento name"):
        bento_name("---")


def test_serving_options_refuse_unknown_names_and_carry_the_canary() -> None:
    from nb2prod.export.manifest import serving_options

    options = serving_options({"max_rows": 10}, ("3", 25))
    assert options.max_rows == 10 and options.psi_threshold == 0.25
    assert options.to_dict()["canary"] == {"version": "3", "percent": 25.0}
    with pytest.raises(ExportError, match=r"unknown serving options \['nope'\]") as info:
        serving_options({"nope": 1}, None)
    assert "max_body_bytes" in str(info.value)


def test_pins_keep_captured_versions_and_add_the_runtime() -> None:
    from nb2prod.export.render import RUNTIME_PACKAGES, pins

    pinned = pins(["scikit-learn==1.5.0", "nb2prod==0.1", "Numpy==1.0"], {"pandas": "2.0.0"})
    assert "scikit-learn==1.5.0" in pinned and "numpy==1.0" in pinned and "pandas==2.0.0" in pinned
    assert not any(p.startswith("nb2prod==") for p in pinned)
    assert {p.split("==")[0] for p in pinned} >= {"scikit-learn", *RUNTIME_PACKAGES} - {"prometheus-client"}
    assert pinned == sorted(pinned)


def test_content_hash_ignores_when_and_through_which_alias() -> None:
    from nb2prod.export.render import content_hash
    from nb2prod.serving.manifest import MANIFEST_FILE, Manifest

    base = Manifest(name="m", bento_name="m", model_version="1", alias=None)
    stamped = Manifest(name="m", bento_name="m", model_version="1", alias="champion").built(
        "2026-01-01", "v1-x"
    )
    other = Manifest(name="m", bento_name="m", model_version="2")
    sha = {"1": {"MLmodel": "sha256:0"}}
    h = content_hash({MANIFEST_FILE: base.to_json(), "service.py": "x"}, sha)
    assert h == content_hash({MANIFEST_FILE: stamped.to_json(), "service.py": "x"}, sha)
    assert h != content_hash({MANIFEST_FILE: other.to_json(), "service.py": "x"}, sha)
    assert h != content_hash({MANIFEST_FILE: base.to_json(), "service.py": "y"}, sha)
    assert h != content_hash(
        {MANIFEST_FILE: base.to_json(), "service.py": "x"}, {"1": {"MLmodel": "sha256:1"}}
    )


def test_render_vendors_the_runtime_and_the_manifest(tmp_path: Path) -> None:
    from nb2prod.export.render import RUNTIME_PACKAGE, SERVING_DIR, class_name, render, write_tree
    from nb2prod.serving.manifest import MANIFEST_FILE, Manifest

    manifest = Manifest(name="breast-cancer", bento_name="breast-cancer", model_version="3")
    files = render(manifest, ["breast-cancer:v3-abc", "breast-cancer:v2-def"], ["numpy==2.0"], "3.11.4")
    assert class_name("breast-cancer") == "BreastCancer" and class_name("3d") == "Model3d"
    assert json.loads(files[MANIFEST_FILE]) == manifest.to_dict()
    assert {f"{RUNTIME_PACKAGE}/{p.name}" for p in SERVING_DIR.glob("*.py")} <= set(files)
    assert 'model_v3 = bentoml.models.BentoModel("breast-cancer:v3-abc")' in files["service.py"]
    assert 'model_v2 = bentoml.models.BentoModel("breast-cancer:v2-def")' in files["service.py"]
    assert 'service: "service:BreastCancer"' in files["bentofile.yaml"]
    assert 'python_version: "3.11"' in files["bentofile.yaml"] and '"numpy==2.0"' in files["bentofile.yaml"]
    target = tmp_path / "bentos" / "breast-cancer"
    write_tree(target, files)
    write_tree(target, {"service.py": "changed"})  # replaced, not merged
    assert [p.name for p in target.iterdir()] == ["service.py"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["breast-cancer"]


def test_the_store_layout_lives_in_bento_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nb2prod.export import bento_store
    from nb2prod.serving.manifest import MANIFEST_FILE

    monkeypatch.delenv("BENTOML_HOME", raising=False)
    settings = Settings(home=tmp_path, tracking_uri="sqlite:///x.db")
    home = settings.bentoml_home
    with pytest.raises(ExportError, match="no Bento of 'Churn'") as info:
        bento_store.latest_bento(settings, "Churn")
    assert "nb2prod export Churn" in str(info.value)
    bento = home / "bentos" / "churn" / "v1-abc"
    (bento / "src" / "__pycache__").mkdir(parents=True)
    (bento / "src" / MANIFEST_FILE).write_text("{}")
    (bento / "src" / "__pycache__" / "x.pyc").write_text("")
    assert bento_store.find_bento(home, "churn", "v1-abc") is None  # no bento.yaml: not built
    (bento / "bento.yaml").write_text("name: churn")
    assert bento_store.find_bento(home, "churn", "v1-abc") == bento
    bento_store.set_latest(home, "churn", "v1-abc")
    assert bento_store.latest_bento(settings, "Churn") == "churn:v1-abc"
    assert bento_store.manifest_path(home, "churn:v1-abc") == bento / "src" / MANIFEST_FILE
    assert bento_store.stored_source(home, "churn", "v1-abc") == {MANIFEST_FILE: "{}"}
    with bento_store.lock(home, "churn"):
        assert (home / ".nb2prod-locks" / "churn.lock").is_file()
    with pytest.raises(ExportError, match=r"does not end in \.bento"):
        bento_store.export_archive(home, "churn:v1-abc", tmp_path / "churn.tar")
