"""The monitoring report on real prediction stores: breast-cancer rows, sketches, feedback, events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import accuracy_score, f1_score

from nb2prod.monitoring import MonitorReport, Reference, reference_of
from nb2prod.monitoring.report import build_report
from nb2prod.serving.store import PREDICTION_COLUMN, SQL_UPSERT_SKETCH, Store
from tests.monitoring.stores import SHIFTED, T0, held_out_store, shifted_store


def test_no_drift_on_held_out_rows_and_quality_equals_sklearn(data: dict[str, Any], tmp_path: Path) -> None:
    logged = held_out_store(str(tmp_path / "p.db"), data)
    held, manifest = data["held"], data["manifest"]
    preds, labelled, truth = logged["preds"], logged["labelled"], logged["truth"]
    report = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600, now=T0 + 3600)
    assert isinstance(report, MonitorReport)
    assert report.source == "sketches"
    assert report.rows == len(held)
    assert report.status == "ok", report.drifted
    assert report.drifted == []
    assert set(report.features) == set(data["features"])
    assert all(d.test == "ks" and d.n == len(held) for d in report.features.values())
    assert report.prediction is not None and not report.prediction.drifted
    q = report.quality
    assert q["labelled"] == len(labelled)
    assert q["accuracy"] == pytest.approx(accuracy_score(truth, preds[::2]), abs=1e-12)
    assert q["f1_macro"] == pytest.approx(f1_score(truth, preds[::2], average="macro"), abs=1e-12)
    assert q["by_version"]["1"]["labelled"] == len(labelled)
    assert report.events["invalid"] == {
        "total": 2,
        "by_reason": {"missing": 1, "not_finite": 1},
        "by_field": {"mean area": 2},
    }
    assert report.versions["1"]["fallbacks"] == 1 and report.versions["1"]["rows"] == len(held)
    assert len(report.over_time["times"]) <= 51 and sum(report.over_time["rows"]) == len(held)
    json.dumps(report.to_dict(), allow_nan=False)


def test_json_uses_the_one_name_of_macro_f1(data: dict[str, Any], tmp_path: Path) -> None:
    held_out_store(str(tmp_path / "p.db"), data)
    report = build_report(str(tmp_path / "p.db"), data["manifest"], until=T0 + 3600, now=T0 + 3600)
    out = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert list(out["quality"]) == ["task", "labelled", "accuracy", "f1_macro", "by_version"]
    assert set(out["quality"]["by_version"]["1"]) == {"labelled", "accuracy", "f1_macro"}
    assert set(out["over_time"]["quality"]) == {"accuracy", "f1_macro"}
    assert "macro_f1" not in json.dumps({k: v for k, v in out.items() if k != "store"})


def test_drift_on_shifted_rows_per_version(data: dict[str, Any], tmp_path: Path) -> None:
    shifted_store(str(tmp_path / "p.db"), data)
    manifest = data["manifest"]
    report = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 10_800, now=T0 + 10_800)
    assert report.status == "drift"
    # (overall, the same held-out rows count twice: other columns' small sampling gaps may pass p < 0.01)
    assert SHIFTED in report.drifted
    assert report.versions["1"]["drifted"] == []
    assert report.versions["2"]["drifted"] == [SHIFTED]
    assert report.versions["2"]["share"] == pytest.approx(0.5)
    # only the shifted half: a larger effect
    late = build_report(str(tmp_path / "p.db"), manifest, since=T0 + 7200, until=T0 + 10_800)
    assert late.rows == len(data["held"]) and list(late.versions) == ["2"]
    late_psi, all_psi = late.features[SHIFTED].psi, report.features[SHIFTED].psi
    assert late_psi is not None and all_psi is not None
    assert late_psi > all_psi > 0.25
    series = report.over_time["psi"][SHIFTED]
    assert max(v for v in series if v is not None) > 1.0
    assert min(v for v in series if v is not None) < 0.25


def test_empty_and_missing_store(data: dict[str, Any], tmp_path: Path) -> None:
    manifest = data["manifest"]
    missing = build_report(str(tmp_path / "nope" / "p.db"), manifest)
    assert missing.status == "insufficient_data" and missing.rows == 0 and missing.source == "none"
    assert missing.quality["labelled"] == 0 and missing.drifted == []
    Store(str(tmp_path / "empty.db")).write(SQL_UPSERT_SKETCH, [])
    Store(str(tmp_path / "empty.db")).add_events([])
    empty = build_report(f"sqlite:///{tmp_path / 'empty.db'}", manifest, since=T0, until=T0 + 60)
    assert empty.status == "insufficient_data"
    json.dumps(empty.to_dict(), allow_nan=False)
    assert not (tmp_path / "nope").exists()  # a report never creates a store


def test_reference_of_reads_the_manifest(data: dict[str, Any]) -> None:
    manifest = data["manifest"]
    ref = reference_of(manifest)
    assert ref == Reference(
        columns={**manifest["reference"], PREDICTION_COLUMN: manifest["target"]["profile"]}, classifier=True
    )
    assert list(ref.columns)[-1] == PREDICTION_COLUMN
    bare = reference_of({"reference": {"x": {"count": 1}}, "target": {"name": "y"}})
    assert bare == Reference(columns={"x": {"count": 1}}, classifier=False)
    assert reference_of({}) == Reference(columns={}, classifier=False)


def test_public_names_import_from_the_package_and_the_modules() -> None:
    import nb2prod.monitoring as monitoring
    from nb2prod.monitoring import report as core
    from nb2prod.monitoring import window

    assert monitoring.MonitorReport is core.MonitorReport and monitoring.build_report is core.build_report
    assert core.parse_since is window.parse_since is monitoring.parse_since
    assert core.parse_since("1h", now=T0) == T0 - 3600
    assert set(monitoring.__all__) <= set(dir(monitoring))
    # the core returns data: no text rendering is left in it
    assert not hasattr(core, "render_text") and not hasattr(core, "format_value")
