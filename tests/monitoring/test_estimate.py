"""Label-free quality (CBPE): the calibration fitted at capture, the estimate under covariate shift, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nb2prod.capture.calibration import MIN_ROWS, fit_calibration, of_test_set
from nb2prod.capture.data import describe
from nb2prod.monitoring.estimate import Calibration, estimate, realized
from nb2prod.monitoring.report import build_report, reference_of
from nb2prod.render.report import render_html, render_text
from nb2prod.serving.manifest import Manifest
from nb2prod.serving.store import SQL_INSERT_PREDICTION, Store
from tests.monitoring.stores import T0


def _split(name: str, seed: int) -> tuple[Any, ...]:
    data = datasets.load_breast_cancer() if name == "breast_cancer" else datasets.load_wine()
    X, y = np.asarray(data.data, dtype=float), np.asarray(data.target)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, stratify=y, random_state=seed)
    X_te, X_pool, y_te, y_pool = train_test_split(
        X_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=seed
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return model, X_tr, X_te, y_te, X_pool, y_pool


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_estimated_accuracy_tracks_realized_under_covariate_shift(name: str) -> None:
    """Windows of 500 rows resampled with feature-dependent weights (labels untouched): MAE <= 0.03."""
    errors, raw_errors = [], []
    for seed in range(3):
        model, X_tr, X_te, y_te, X_pool, y_pool = _split(name, seed)
        classes = [str(c) for c in model.classes_]
        calibration = Calibration(of_test_set(model, (X_te, y_te)), classes)
        assert calibration.calibrated
        proba, pred = model.predict_proba(X_pool), model.predict(X_pool)
        mu, sd = X_tr.mean(axis=0), X_tr.std(axis=0) + 1e-12
        z = ((X_pool - mu) / sd) @ np.linalg.svd((X_tr - mu) / sd, full_matrices=False)[2][0]
        z = (z - z.mean()) / z.std()
        rng = np.random.default_rng(seed)
        for strength in (-2.0, -1.0, 0.0, 1.0, 2.0):
            w = np.exp(strength * z)
            rows = rng.choice(len(X_pool), size=500, p=w / w.sum())
            probabilities = [dict(zip(classes, p, strict=True)) for p in proba[rows].tolist()]
            got = estimate(probabilities, pred[rows].tolist(), calibration)
            raw = estimate(probabilities, pred[rows].tolist(), Calibration(None, classes))
            truth = float((pred[rows] == y_pool[rows]).mean())
            errors.append(abs(float(got["estimated_accuracy"] or 0) - truth))
            raw_errors.append(abs(float(raw["estimated_accuracy"] or 0) - truth))
    assert np.mean(errors) <= 0.03, (np.mean(errors), np.mean(raw_errors))


def test_calibration_corrects_overconfident_scores() -> None:
    """Scores of 0.95 that are right 70 % of the time: the calibrated estimate says 0.7, the raw one 0.95."""
    rng = np.random.default_rng(1)
    n = 2000
    hit = rng.random(n) < 0.7
    labels = np.where(hit, "a", "b")
    proba = np.tile([0.95, 0.05], (n, 1))
    cal = fit_calibration(proba[:1000], labels[:1000].tolist(), ["a", "b"])
    assert cal is not None and cal["method"] == "isotonic-ovr" and cal["rows"] == 1000
    json.dumps(cal, allow_nan=False)  # small JSON for the manifest
    assert all(len(m["x"]) <= 64 and m["x"] == sorted(m["x"]) for m in cal["maps"].values())
    probabilities = [{"a": 0.95, "b": 0.05}] * 1000
    got = estimate(probabilities, ["a"] * 1000, Calibration(cal, ["a", "b"]), labels[1000:].tolist())
    assert got["estimated_accuracy"] == pytest.approx(0.7, abs=0.03)
    assert got["accuracy"] == pytest.approx(float(hit[1000:].mean()))
    raw = estimate(probabilities, ["a"] * 1000, Calibration(None, ["a", "b"]))
    assert raw["estimated_accuracy"] == pytest.approx(0.95)


def test_no_calibration_without_enough_rows_or_probabilities() -> None:
    assert fit_calibration(np.full((MIN_ROWS - 1, 2), 0.5), ["a"] * (MIN_ROWS - 1), ["a", "b"]) is None
    assert fit_calibration(np.full((30, 3), 0.3), ["a"] * 30, ["a", "b"]) is None  # 3 columns, 2 classes
    assert of_test_set(object(), (None, None)) is None  # no predict_proba: None, never an exception
    assert of_test_set(LogisticRegression(), lambda: 1 / 0) is None  # type: ignore[arg-type,return-value]


def test_realized_metrics_equal_sklearn() -> None:
    model, _, _, _, X_pool, y_pool = _split("wine", 0)
    proba, pred = model.predict_proba(X_pool), model.predict(X_pool)
    got = realized(proba, pred, y_pool)
    assert got["f1_macro"] == pytest.approx(f1_score(y_pool, pred, average="macro"))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y_pool, proba, multi_class="ovr"))
    labelled = estimate(
        [dict(zip(["0", "1", "2"], p, strict=True)) for p in proba.tolist()],
        pred.tolist(),
        Calibration(None, ["0", "1", "2"]),
        y_pool.tolist(),
    )
    assert labelled["roc_auc"] == pytest.approx(got["roc_auc"]) and labelled["labelled"] == len(y_pool)


def _rows(
    model: Any, X: np.ndarray, version: str, monitor: str, prefix: str, start: float
) -> list[dict[str, Any]]:
    classes = [str(c) for c in model.classes_]
    proba, pred = model.predict_proba(X), model.predict(X)
    return [
        {
            "request_id": f"{prefix}{i}",
            "ts": start + i,
            "monitor": monitor,
            "model_version": version,
            "features": json.dumps({"x0": float(X[i, 0])}),
            "prediction": json.dumps(
                {
                    "prediction": int(pred[i]),
                    "probabilities": dict(zip(classes, proba[i].tolist(), strict=True)),
                }
            ),
        }
        for i in range(len(X))
    ]


def test_report_estimates_per_version_and_bucket_beside_realized_and_counts_batch(tmp_path: Path) -> None:
    """The report: estimated accuracy from the manifest's calibration beside the realized accuracy;
    batch rows are a traffic line of their own; shadow rows are not traffic."""
    model, X_tr, X_te, y_te, X_pool, y_pool = _split("breast_cancer", 0)
    classes = [str(c) for c in model.classes_]
    cal = of_test_set(model, (X_te, y_te))
    info = {"is_classifier": True, "has_proba": True, "classes": [0, 1], "calibration": cal}
    profile = describe(pd.DataFrame({"x0": X_tr[:, 0]}), name="train").to_dict()["profile"]
    manifest = Manifest.from_dict(
        {"model_version": "1", "model": info, "models": {"1": info}, "reference": profile}
    ).to_dict()
    assert manifest["models"]["1"]["calibration"] == cal  # the calibration travels in the typed manifest
    assert reference_of(manifest).calibrations["1"].classes == classes
    rng = np.random.default_rng(3)
    picked = rng.choice(len(X_pool), size=400)
    X, y = X_pool[picked], y_pool[picked]
    store = Store(str(tmp_path / "p.db"))
    online = _rows(model, X[:300], "1", "test", "r", T0)
    batch = _rows(model, X[300:], "1", "batch", "b-", T0 + 1200)
    shadow = _rows(model, X[:100], "1", "shadow", "r", T0)  # same request ids as answered rows
    store.write(SQL_INSERT_PREDICTION, online + batch + shadow)
    truth = {f"r{i}": int(label) for i, label in enumerate(y[:300])}
    store.add_feedback(list(truth.items())[:150], source="t")
    store.set_control("shadow", {"version": "1"})  # shadow rows are counted once a shadow was started
    store.close()
    report = build_report(str(tmp_path / "p.db"), manifest, since=T0, until=T0 + 3600, now=T0 + 3600)
    assert report.traffic == {"online": {"1": 300}, "batch": {"1": 100}, "shadow": {"1": 100}}
    assert report.rows == 400  # online + batch, not shadow
    e = report.estimate
    assert e["estimated"] == 400 and e["calibrated"]
    assert e["labelled"] == 150 and e["accuracy"] == report.quality["accuracy"]
    assert e["estimated_accuracy"] is not None and abs(e["estimated_accuracy"] - 0.96) < 0.05
    assert set(e["by_version"]) == {"1"}
    assert sum(report.over_time["estimated_rows"]) == 400
    est_series = [v for v in report.over_time["estimated"]["accuracy"] if v is not None]
    assert est_series and all(0.5 <= v <= 1 for v in est_series)
    assert e["reference_accuracy"] == cal["accuracy"]  # type: ignore[index]
    assert e["estimated_drop"] == pytest.approx(cal["accuracy"] - e["estimated_accuracy"])  # type: ignore[index]
    text = render_text(report)
    assert "Estimated quality" in text and "est. accuracy" in text and "calibrated at capture" in text
    assert "batch" in text.split("Traffic", 1)[1] and "agreement with the champion" in text
    page = render_html(report)
    assert "<h2>Shadow</h2>" in page and "estimated accuracy" in page
    out = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert {"estimated_accuracy", "accuracy", "estimated_f1_macro", "estimated_roc_auc"} <= set(
        out["estimate"]
    )
    assert out["shadow"]["rows"] == 100 and out["shadow"]["agreement"] == 1.0


def test_report_without_probabilities_has_no_estimate(data: dict[str, Any], tmp_path: Path) -> None:
    from tests.monitoring.stores import held_out_store

    held_out_store(str(tmp_path / "p.db"), data)
    manifest = {**data["manifest"], "model_version": "1", "model": {"is_classifier": True, "classes": [0, 1]}}
    report = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600, now=T0 + 3600)
    assert report.estimate == {} and report.shadow is None
    assert report.traffic == {"online": {"1": len(data["held"])}}


def test_if_degraded_triggers_on_the_estimated_drop_under_a_shift(tmp_path: Path) -> None:
    """Rows shifted towards the model's hard region (labels untouched) lower the estimate below the
    test accuracy: retrain --if-degraded goes on; unshifted rows do not trigger it."""
    from nb2prod.lifecycle.retrain import degradation_of

    model, _, X_te, y_te, X_pool, _ = _split("breast_cancer", 0)
    cal = of_test_set(model, (X_te, y_te))
    assert cal is not None
    info = {"is_classifier": True, "has_proba": True, "classes": [0, 1], "calibration": cal}
    manifest = {"model_version": "1", "model": info, "models": {"1": info}, "reference": {}}
    margin = np.abs(model.decision_function(X_pool))
    hard = np.argsort(margin)[:20]  # the rows nearest the decision boundary
    rng = np.random.default_rng(0)
    for label, picked, triggers in (
        ("unshifted", rng.choice(len(X_pool), 500), False),
        ("shifted", rng.choice(hard, 500), True),
    ):
        path = tmp_path / f"{label}.db"
        store = Store(str(path))
        store.write(SQL_INSERT_PREDICTION, _rows(model, X_pool[picked], "1", "test", "r", T0))
        store.close()
        report = build_report(str(path), manifest, since=T0, until=T0 + 3600, now=T0 + 3600)
        skipped, figures = degradation_of("m", report, 0.05)
        assert figures["reference_accuracy"] == cal["accuracy"] and figures["rows"] == 500
        assert (skipped is None) is triggers, (label, figures)
        if skipped is not None:
            assert skipped.action == "skipped" and "nothing retrained" in skipped.reason
    empty = build_report(str(tmp_path / "none.db"), manifest, since=T0, until=T0 + 3600, now=T0 + 3600)
    skipped, _ = degradation_of("m", empty, 0.05)
    assert skipped is not None and skipped.reason.startswith("no estimate of the served accuracy")


def test_batch_traffic_from_sketches_beside_online_traffic(data: dict[str, Any], tmp_path: Path) -> None:
    """With sketches, batch rows are counted from the batch writer's sketches (no scan of the rows)."""
    from tests.monitoring.stores import log_rows

    path = str(tmp_path / "p.db")
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    store = Store(path)
    log_rows(store, manifest, held, preds, start=T0)
    log_rows(
        store,
        manifest,
        held.iloc[:60],
        preds[:60],
        start=T0 + 600,
        prefix="b1-",
        writer="batch-b1-",
        monitor="batch",
        writers=1,
    )
    store.close()
    report = build_report(path, manifest, until=T0 + 3600, now=T0 + 3600)
    assert report.source == "sketches" and report.rows == len(held) + 60
    assert report.traffic == {"online": {"1": len(held)}, "batch": {"1": 60}}
    assert "shadow" not in report.traffic and report.shadow is None


def test_the_report_queries_run_on_postgresql(pg_fresh: Any) -> None:
    """Traffic, the shadow join and the probability probe (LIKE with '%') on a real PostgreSQL store."""
    model, _, X_te, y_te, X_pool, _ = _split("breast_cancer", 0)
    info = {
        "is_classifier": True,
        "has_proba": True,
        "classes": [0, 1],
        "calibration": of_test_set(model, (X_te, y_te)),
    }
    manifest = {"model_version": "1", "model": info, "models": {"1": info}, "reference": {}}
    url = pg_fresh("estimate")
    store = Store(url)
    store.write(
        SQL_INSERT_PREDICTION,
        _rows(model, X_pool[:80], "1", "test", "r", T0)
        + _rows(model, X_pool[:20], "1", "batch", "b-", T0 + 100)
        + _rows(model, X_pool[:30], "2", "shadow", "r", T0),
    )
    store.set_control("shadow", {"version": "2"})
    store.close()
    report = build_report(url, manifest, since=T0, until=T0 + 3600, now=T0 + 3600)
    assert report.traffic == {"online": {"1": 80}, "batch": {"1": 20}, "shadow": {"2": 30}}
    assert report.estimate["estimated"] == 100 and report.shadow is not None
    assert report.shadow["paired"] == 30 and report.shadow["agreement"] == 1.0
