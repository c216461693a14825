"""The Bento manifest: typed, versioned, read and written in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def exported_manifest() -> dict[str, Any]:
    """A manifest as ``nb2prod export`` wrote it before the typed manifest (every key it writes)."""
    block = {
        "flavor": "sklearn",
        "class_name": "Pipeline",
        "is_classifier": True,
        "has_proba": True,
        "classes": [0, 1],
        "feature_names": ["site", "x"],
        "trusted_types": [],
        "artifact_sha256": {"MLmodel": "sha256:aa", "model.skops": "sha256:bb"},
    }
    profile = {"drift_edges": ["-inf", 1.0, "inf"], "drift_fractions": [0.5, 0.5], "n_infinite": 0}
    return {
        "format": "nb2prod-bento-v1",
        "name": "Tumor",
        "bento_name": "tumor",
        "model_version": "2",
        "model_uri": "models:/Tumor/2",
        "alias": "champion",
        "bento_model_tag": "tumor:v2-abc",
        "model": block,
        "models": {
            "1": {**block, "bento_model_tag": "tumor:v1-def", "run_id": "r1"},
            "2": {**block, "bento_model_tag": "tumor:v2-abc", "run_id": "r2"},
        },
        "fallback": "1",
        "trusted_prefixes": ["sklearn.", "numpy."],
        "schema": [
            {
                "name": "site",
                "dtype": "category",
                "kind": "category",
                "nullable": False,
                "categories": ["a", "b"],
                "ordered": False,
                "min": None,
                "max": None,
            },
            {
                "name": "x",
                "dtype": "float64",
                "kind": "float",
                "nullable": True,
                "categories": None,
                "ordered": False,
            },
        ],
        "reference": {"x": profile},
        "reference_rows": 426,
        "target": {"name": "target", "profile": {"frequencies": {"0": 0.4, "1": 0.6}}},
        "provenance": {
            "run_id": "r2",
            "model_id": "m-123",
            "git_commit": None,
            "env_digest": "sha256:ee",
            "notebook": "notebooks/tumor.ipynb",
            "notebook_digest": "sha256:nn",
            "data_digests": {"dataset:train": "xxh3_128:dd"},
            "python_version": "3.11.9",
            "dataset": "train",
        },
        "serving": {
            "max_body_bytes": 1048576,
            "max_rows": 1000,
            "drift_window": 500,
            "psi_threshold": 0.25,
            "max_batch_size": 64,
            "max_latency_ms": 10000,
            "drift_refresh_s": 15,
            "canary": {"version": "1", "percent": 10.0},
        },
        "exported_at": "2026-01-01T00:00:00+00:00",
        "bento_version": "v2-0123456789ab",
    }


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_an_exported_manifest_reads_and_writes_back_byte_for_byte(tmp_path: Path) -> None:
    from nb2prod.serving.manifest import MANIFEST_FILE, Manifest

    data = exported_manifest()
    (tmp_path / MANIFEST_FILE).write_text(_text(data))
    manifest = Manifest.load(tmp_path)  # the folder, or the file
    assert manifest == Manifest.load(tmp_path / MANIFEST_FILE)
    assert manifest.to_json() == _text(data)
    assert manifest.to_dict() == data
    # before the build stamps it, the two build keys are absent
    unstamped = {k: v for k, v in data.items() if k not in ("exported_at", "bento_version")}
    assert Manifest.from_dict(unstamped).to_dict() == unstamped
    assert Manifest.from_dict(unstamped).built("t", "v").to_dict() == {
        **unstamped,
        "exported_at": "t",
        "bento_version": "v",
    }


def test_the_typed_view_of_a_manifest() -> None:
    from nb2prod.serving.manifest import Manifest
    from nb2prod.serving.store import PREDICTION_COLUMN

    manifest = Manifest.from_dict(exported_manifest())
    assert manifest.columns == ["site", "x"] and manifest.kinds == {"site": "category", "x": "float"}
    assert manifest.schema[0].categories == ["a", "b"] and manifest.schema[0].extra == {
        "min": None,
        "max": None,
    }
    assert list(manifest.carried()) == ["1", "2"] and manifest.carried()["2"].run_id == "r2"
    assert manifest.model.bento_model_tag is None and manifest.model.is_classifier
    assert manifest.serving.canary is not None and manifest.serving.canary.percent == 10.0
    assert manifest.serving.control_poll_s == 0.25
    assert manifest.provenance.data_digests == {"dataset:train": "xxh3_128:dd"}
    assert set(manifest.monitored_columns()) == {"x", PREDICTION_COLUMN}


def test_a_one_model_manifest_carries_its_model() -> None:
    from nb2prod.serving.manifest import Manifest

    data = exported_manifest()
    del data["models"]
    carried = Manifest.from_dict(data).carried()
    assert list(carried) == ["2"] and carried["2"].bento_model_tag == "tumor:v2-abc"
    assert carried["2"].artifact_sha256 == data["model"]["artifact_sha256"]


def test_keys_this_version_does_not_know_are_kept() -> None:
    from nb2prod.serving.manifest import Manifest

    data = exported_manifest()
    data["added_later"] = {"a": 1}
    data["serving"]["control_poll_s"] = 0.5
    data["provenance"]["ci_job"] = "42"
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data
    assert manifest.serving.control_poll_s == 0.5


def test_a_newer_or_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    from nb2prod.serving.manifest import FORMAT, Manifest, ManifestError, format_version

    assert format_version(FORMAT) == 1 and format_version(None) == 1
    with pytest.raises(
        ManifestError, match=r"nb2prod-bento-v2 is newer than this runtime reads \(nb2prod-bento-v1\)"
    ):
        Manifest.from_dict({**exported_manifest(), "format": "nb2prod-bento-v2"})
    with pytest.raises(ManifestError, match="unknown manifest format 'bentoml-v9'"):
        Manifest.from_dict({**exported_manifest(), "format": "bentoml-v9"})
    with pytest.raises(ManifestError, match="a manifest is a JSON object, not list"):
        Manifest.from_dict([])  # type: ignore[arg-type]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ManifestError, match="is not JSON"):
        Manifest.load(tmp_path / "broken.json")
    assert issubclass(ManifestError, ValueError)


def test_the_runtime_reads_a_typed_or_a_mapping_manifest() -> None:
    from nb2prod.serving.manifest import Manifest
    from nb2prod.serving.runtime import Runtime

    data = exported_manifest()
    for manifest in (data, Manifest.from_dict(data)):
        runtime = Runtime(manifest, {"2": "/nowhere/2", "1": "/nowhere/1"}, background=False)
        assert runtime.active == "2" and runtime.canary == ("1", 10.0)
        assert set(runtime.slots) == {"1", "2"} and not runtime.ready  # no files: not loaded
        meta = runtime.metadata()
        assert meta["bento"] == "tumor:v2-0123456789ab" and meta["model_id"] == "m-123"
        assert meta["features"] == ["site", "x"] and meta["classes"] == [0, 1]
