"""The monitoring report on real prediction stores: breast-cancer rows, sketches, feedback, events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, root_mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nb2prod.capture.data import describe
from nb2prod.exceptions import MonitorError
from nb2prod.monitoring.html import render_html
from nb2prod.monitoring.report import build_report, parse_since, render_text
from nb2prod.serving.sketch import Sketcher, encode
from nb2prod.serving.store import PREDICTION_COLUMN, SQL_INSERT_PREDICTION, SQL_UPSERT_SKETCH, Store

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)
SHIFTED = "mean radius"


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    frame = load_breast_cancer(as_frame=True).frame
    train = frame.sample(frac=0.7, random_state=0)
    held = frame.drop(train.index)
    features = [c for c in frame.columns if c != "target"]
    record = describe(train, name="train", target="target").to_dict()
    manifest = {
        "reference": {f: record["profile"][f] for f in features},
        "target": {"name": "target", "profile": record["profile"]["target"]},
        "schema": [c for c in record["schema"] if c["name"] in features],
        "model": {"is_classifier": True},
    }
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        train[features], train["target"]
    )
    return {"train": train, "held": held, "features": features, "manifest": manifest, "model": model}


def log_rows(
    store: Store,
    manifest: dict[str, Any],
    frame: pd.DataFrame,
    predictions: np.ndarray,
    *,
    start: float,
    version: str = "1",
    writers: int = 2,
    per_minute: int = 20,
    prefix: str = "r",
) -> list[str]:
    """Log rows as the service does: a prediction row each, and per-minute sketches per writer."""
    features = list(manifest["reference"])
    sketchers = {c: Sketcher(p) for c, p in manifest["reference"].items()}
    sketchers[PREDICTION_COLUMN] = Sketcher(manifest["target"]["profile"])
    ids, pred_rows, sketch_rows = [], [], []
    for k, first in enumerate(range(0, len(frame), per_minute)):
        chunk = frame.iloc[first : first + per_minute]
        preds = predictions[first : first + per_minute]
        bucket = int(start) + 60 * k
        for w in range(writers):
            part, part_preds = chunk.iloc[w::writers], preds[w::writers]
            if part.empty:
                continue
            for col, sketcher in sketchers.items():
                values = part_preds if col == PREDICTION_COLUMN else part[col].to_numpy()
                sketch_rows.append(
                    {
                        "bucket": bucket,
                        "model_version": version,
                        "col": col,
                        "writer": f"w{w}",
                        "n": len(part),
                        "counts": encode(sketcher(values)),
                    }
                )
        for i, (_, row) in enumerate(chunk.iterrows()):
            rid = f"{prefix}{first + i}"
            ids.append(rid)
            pred_rows.append(
                {
                    "request_id": rid,
                    "ts": bucket + 1 + i,
                    "monitor": "test",
                    "model_version": version,
                    "features": json.dumps({f: float(row[f]) for f in features}),
                    "prediction": json.dumps({"prediction": int(preds[i])}),
                }
            )
    store.write(SQL_UPSERT_SKETCH, sketch_rows)
    store.write(SQL_INSERT_PREDICTION, pred_rows)
    return ids


def test_no_drift_on_held_out_rows_and_quality_equals_sklearn(data: dict[str, Any], tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"))
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    ids = log_rows(store, manifest, held, preds, start=T0)
    labelled = ids[::2]
    truth = held["target"].to_numpy()[::2]
    store.add_feedback(zip(labelled, truth.tolist(), strict=True), source="test", ts=T0 + 5000)
    store.add_events(
        [
            {"kind": "invalid", "reason": "missing", "field": "mean area", "ts": T0 + 10},
            {"kind": "invalid", "reason": "not_finite", "field": "mean area", "ts": T0 + 11},
            {"kind": "fallback", "model_version": "1", "ts": T0 + 12},
        ]
    )
    store.close()
    report = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600, now=T0 + 3600)
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
    assert q["macro_f1"] == pytest.approx(f1_score(truth, preds[::2], average="macro"), abs=1e-12)
    assert q["by_version"]["1"]["labelled"] == len(labelled)
    assert report.events["invalid"] == {
        "total": 2,
        "by_reason": {"missing": 1, "not_finite": 1},
        "by_field": {"mean area": 2},
    }
    assert report.versions["1"]["fallbacks"] == 1 and report.versions["1"]["rows"] == len(held)
    assert len(report.over_time["times"]) <= 51 and sum(report.over_time["rows"]) == len(held)
    json.dumps(report.to_dict(), allow_nan=False)
    text = render_text(report)
    assert "status: ok" in text and SHIFTED in text and "accuracy" in text
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    for f in data["features"]:
        assert f in page


def test_drift_on_shifted_rows_per_version(data: dict[str, Any], tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"))
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    log_rows(store, manifest, held, preds, start=T0, version="1")
    shifted = held.copy()
    shifted[SHIFTED] = shifted[SHIFTED] * 1.5 + 2.0
    log_rows(store, manifest, shifted, preds, start=T0 + 7200, version="2", prefix="s")
    store.close()
    report = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 10_800, now=T0 + 10_800)
    assert report.status == "drift"
    # (overall, the same held-out rows count twice: other columns' small sampling gaps may pass p < 0.01)
    assert SHIFTED in report.drifted
    assert report.versions["1"]["drifted"] == []
    assert report.versions["2"]["drifted"] == [SHIFTED]
    assert report.versions["2"]["share"] == pytest.approx(0.5)
    # only the shifted half: a larger effect
    late = build_report(str(tmp_path / "p.db"), manifest, since=T0 + 7200, until=T0 + 10_800)
    assert late.rows == len(held) and list(late.versions) == ["2"]
    assert late.features[SHIFTED].psi > report.features[SHIFTED].psi > 0.25
    series = report.over_time["psi"][SHIFTED]
    assert max(v for v in series if v is not None) > 1.0
    assert min(v for v in series if v is not None) < 0.25
    page = render_html(report)
    assert "DRIFT" in page and "mean radius" in page


def test_since_until_filter_sketches_feedback_and_events(data: dict[str, Any], tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"))
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    ids = log_rows(store, manifest, held, preds, start=T0, per_minute=20)  # minutes T0 .. T0+8*60
    store.add_feedback(zip(ids, held["target"].tolist(), strict=True), source="test")
    store.add_events([{"kind": "invalid", "reason": "missing", "field": "x", "ts": T0 + 200}])
    store.close()
    path = str(tmp_path / "p.db")
    # minutes starting in [T0+120, T0+240): rows 40..79
    part = build_report(path, manifest, since=T0 + 120, until=T0 + 240)
    assert part.rows == 40
    assert part.quality["labelled"] == 40
    assert part.quality["accuracy"] == pytest.approx(accuracy_score(held["target"][40:80], preds[40:80]))
    assert part.events["invalid"]["total"] == 1
    assert part.status == "insufficient_data"
    # since inside a minute: that whole minute's sketch is counted (minute resolution)
    assert build_report(path, manifest, since=T0 + 130, until=T0 + 240).rows == 40
    none = build_report(path, manifest, since=T0 - 600, until=T0)
    assert none.rows == 0 and none.quality["labelled"] == 0 and none.events["invalid"]["total"] == 0
    with pytest.raises(MonitorError, match="window is empty"):
        build_report(path, manifest, since=T0, until=T0)


def test_rows_without_sketches_are_sketched_from_predictions(data: dict[str, Any], tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"))
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    log_rows(store, manifest, held, preds, start=T0)
    with_sketches = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600)
    store.write("DELETE FROM sketches", [{}])
    store.close()
    scanned = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600)
    assert scanned.source == "predictions" and scanned.rows == with_sketches.rows
    for f in data["features"]:
        assert scanned.features[f].statistic == with_sketches.features[f].statistic
        assert scanned.features[f].psi == pytest.approx(with_sketches.features[f].psi, rel=1e-12)


def test_regression_quality_equals_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(10, 2, size=500)})
    record = describe(train, name="train", target="y").to_dict()
    manifest = {
        "reference": {"x": record["profile"]["x"]},
        "target": {"name": "y", "profile": record["profile"]["y"]},
        "model": {"is_classifier": False},
    }
    live = pd.DataFrame({"x": rng.normal(size=120)})
    preds = rng.normal(10, 2, size=120)
    truth = preds + rng.normal(0, 0.7, size=120)
    store = Store(str(tmp_path / "p.db"))
    rows = [
        {
            "request_id": f"q{i}",
            "ts": T0 + i,
            "monitor": "m",
            "model_version": "3",
            "features": json.dumps({"x": float(live["x"][i])}),
            "prediction": json.dumps({"prediction": float(preds[i])}),
        }
        for i in range(120)
    ]
    store.write(SQL_INSERT_PREDICTION, rows)
    store.add_feedback([(f"q{i}", float(truth[i])) for i in range(120)], source="t")
    store.close()
    report = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 600)
    assert report.quality["task"] == "regression" and report.quality["labelled"] == 120
    assert report.quality["mae"] == pytest.approx(mean_absolute_error(truth, preds), rel=1e-12)
    assert report.quality["rmse"] == pytest.approx(root_mean_squared_error(truth, preds), rel=1e-12)
    assert "mae" in render_text(report)


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
    assert "insufficient_data" in render_text(empty)
    assert "<svg" in render_html(empty) or "no rows" in render_html(empty)
    assert not (tmp_path / "nope").exists()  # a report never creates a store


@pytest.mark.parametrize(
    "text,want",
    [
        ("30s", T0 - 30),
        ("30m", T0 - 1800),
        ("2h", T0 - 7200),
        ("7d", T0 - 7 * 86400),
        (" 1.5h ", T0 - 5400),
        ("2027-01-15T08:00:00", 1_800_000_000.0),
        ("2027-01-15T08:00:00Z", 1_800_000_000.0),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000.0),
        ("2027-01-15", 1_799_971_200.0),
    ],
)
def test_parse_since(text: str, want: float) -> None:
    assert parse_since(text, now=T0) == want


@pytest.mark.parametrize("text", ["", "yesterday", "30", "5 minutes", "-2h", "2027-13-01"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(MonitorError, match="cannot read") as info:
        parse_since(text, now=T0)
    assert info.value.hint and "30m" in info.value.hint
