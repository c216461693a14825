"""The service's own check of its model files before anything is deserialised."""

from __future__ import annotations

from pathlib import Path

import pytest


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


def test_a_slot_whose_files_changed_stays_not_ready_and_says_why(tmp_path: Path) -> None:
    from nb2prod.serving.integrity import sha256_tree
    from nb2prod.serving.loading import MODEL_SUBDIR, ModelSlot
    from nb2prod.serving.manifest import ModelInfo

    folder = tmp_path / MODEL_SUBDIR
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {sklearn: {pickled_model: model.skops}}")
    (folder / "model.skops").write_bytes(b"abc")
    info = ModelInfo(flavor="sklearn", artifact_sha256=sha256_tree(folder))
    (folder / "model.skops").write_bytes(b"abd")
    slot = ModelSlot("m", "1", info, tmp_path, ["sklearn."])
    slot.load()
    assert not slot.ready and slot.model is None
    assert slot.failure is not None and slot.failure.startswith("integrity check failed: file model.skops")


def _built_source(root: Path) -> tuple[Path, str]:
    """A Bento ``src/`` as export writes it, in a store folder named by its version."""
    import json

    from nb2prod.serving.integrity import SOURCE_LIST, listing_hash, source_listing

    manifest = {"name": "m", "schema": [{"name": "x", "kind": "float"}, {"name": "y", "kind": "float"}]}
    files = {
        "service.py": "print('serve')\n",
        "nb2prod_manifest.json": json.dumps(manifest),
        "_nb2prod_serving/runtime.py": "X = 1\n",
        "bentofile.yaml": "service: service:M\n",
    }
    artifacts = {"1": {"MLmodel": "sha256:" + "0" * 64}}
    listing = source_listing(files, artifacts)
    version = f"v1-{listing_hash(listing)[:12]}"
    src = root / "bentos" / "m" / version / "src"
    for rel, text in {**files, SOURCE_LIST: json.dumps(listing)}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    # BentoML rewrites bentofile.yaml in its own words: not compared
    (src / "bentofile.yaml").write_text("service: service:M\nlabels: {}\n")
    return src, version


def test_the_bento_source_is_checked_against_its_tag(tmp_path: Path) -> None:
    import json

    from nb2prod.serving.integrity import SOURCE_LIST, IntegrityError, listing_hash, verify_source

    src, _version = _built_source(tmp_path)
    verify_source(src)
    # the build stamps are not hashed: stamping the manifest keeps it valid
    manifest_path = src / "nb2prod_manifest.json"
    stamped = dict(json.loads(manifest_path.read_text()), exported_at="2026-11-29T00:00:00+00:00")
    manifest_path.write_text(json.dumps(stamped))
    verify_source(src)
    # a column removed from the manifest: named
    tampered = dict(stamped, schema=stamped["schema"][:1])
    manifest_path.write_text(json.dumps(tampered))
    with pytest.raises(IntegrityError, match=r"file nb2prod_manifest\.json of the Bento source differs"):
        verify_source(src)
    # ... and the listing "fixed" to match: no longer the tag's hash
    listing = json.loads((src / SOURCE_LIST).read_text())
    listing["files"]["nb2prod_manifest.json"] = "sha256:" + "1" * 64
    (src / SOURCE_LIST).write_text(json.dumps(listing))
    with pytest.raises(
        IntegrityError, match=r"nb2prod_source\.json hashes to [0-9a-f]{12}, not to the Bento"
    ):
        verify_source(src)
    assert listing_hash(listing)[:12] not in src.parent.name


def test_an_edited_missing_or_added_source_file_is_named(tmp_path: Path) -> None:
    from nb2prod.serving.integrity import SOURCE_LIST, IntegrityError, verify_source

    src, version = _built_source(tmp_path)
    (src / "service.py").write_text("print('serve anything')\n")
    with pytest.raises(IntegrityError, match=r"file service\.py of the Bento source differs"):
        verify_source(src)
    (src / "service.py").write_text("print('serve')\n")
    (src / "_nb2prod_serving" / "runtime.py").unlink()
    with pytest.raises(IntegrityError, match=r"_nb2prod_serving/runtime\.py of the Bento source is missing"):
        verify_source(src)
    (src / "_nb2prod_serving" / "runtime.py").write_text("X = 1\n")
    (src / "_nb2prod_serving" / "__pycache__").mkdir()
    (src / "_nb2prod_serving" / "__pycache__" / "runtime.cpython-311.pyc").write_bytes(b"\0")
    verify_source(src)  # Python's own caches are not source
    (src / "_nb2prod_serving" / "extra.py").write_text("import os\n")
    with pytest.raises(
        IntegrityError, match=r"_nb2prod_serving/extra\.py is in the Bento source but was not built"
    ):
        verify_source(src)
    (src / "_nb2prod_serving" / "extra.py").unlink()
    (src / SOURCE_LIST).unlink()
    with pytest.raises(IntegrityError, match=r"nb2prod_source\.json is missing"):
        verify_source(src, version=version)


def test_a_runtime_whose_bento_source_changed_serves_nothing(tmp_path: Path) -> None:
    from nb2prod.serving.runtime import Runtime

    src, _ = _built_source(tmp_path)
    (src / "service.py").write_text("print('serve anything')\n")
    manifest = {
        "name": "m",
        "model_version": "1",
        "schema": [{"name": "x", "kind": "float"}],
        "model": {"flavor": "sklearn"},
        "serving": {},
    }
    runtime = Runtime(manifest, tmp_path / "no-model", background=False, source_dir=src)
    assert not runtime.ready
    assert runtime.failure is not None and "service.py of the Bento source differs" in runtime.failure
