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
