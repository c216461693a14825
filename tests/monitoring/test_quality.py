"""Live quality from feedback, against scikit-learn on the same predictions and labels."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, root_mean_squared_error

from nb2prod import metrics
from nb2prod.monitoring.quality import QualityMetrics, metric_names, quality_metrics, summarize
from nb2prod.monitoring.report import build_report
from tests.monitoring.stores import T0, regression_store


def test_regression_quality_equals_sklearn(tmp_path: Path) -> None:
    logged = regression_store(str(tmp_path / "p.db"))
    truth, preds = logged["truth"], logged["preds"]
    report = build_report(str(tmp_path / "p.db"), logged["manifest"], until=T0 + 600)
    assert report.quality["task"] == "regression" and report.quality["labelled"] == 120
    assert report.quality["mae"] == pytest.approx(mean_absolute_error(truth, preds), rel=1e-12)
    assert report.quality["rmse"] == pytest.approx(root_mean_squared_error(truth, preds), rel=1e-12)
    assert set(report.over_time["quality"]) == {"mae", "rmse"}


def test_classification_metrics_equal_sklearn_with_unseen_classes() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, size=300)
    preds = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 5, size=300))  # class 4 never true
    got = quality_metrics(list(zip(preds.tolist(), truth.tolist(), strict=True)), classifier=True)
    assert got["labelled"] == 300
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, preds), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(f1_score(truth, preds, average="macro"), abs=1e-12)


def test_labels_compare_as_keys() -> None:
    # 1, 1.0 and "1" are one class; True is not 1; a string label stays itself
    pairs = [(1, 1.0), (1.0, "1"), (True, 1), ("a", "a"), ("a", "b"), ({"k": 1}, {"k": 1})]
    got = quality_metrics(pairs, classifier=True)
    assert got["labelled"] == 6 and got["accuracy"] == pytest.approx(4 / 6)


def test_regression_leaves_out_pairs_that_are_not_numbers() -> None:
    pairs = [(1.0, 2.0), (3.0, 1.0), (None, 1.0), (2.0, "x"), (True, 1.0), (float("nan"), 1.0), ("4", "4.5")]
    got = quality_metrics(pairs, classifier=False)
    assert got["labelled"] == 3
    assert got["mae"] == pytest.approx((1 + 2 + 0.5) / 3)
    assert got["rmse"] == pytest.approx(np.sqrt((1 + 4 + 0.25) / 3))


def test_no_labelled_row() -> None:
    assert quality_metrics([], classifier=True) == {"labelled": 0, "accuracy": None, "f1_macro": None}
    assert quality_metrics([(None, None)], classifier=False) == {"labelled": 0, "mae": None, "rmse": None}


def test_summarize_overall_and_per_version() -> None:
    rows = [("2", 1, 1), ("1", 0, 1), ("1", 1, 1), ("2", 0, 0)]
    got = summarize(rows, classifier=True)
    assert list(got) == ["task", "labelled", "accuracy", "f1_macro", "by_version"]
    assert got["task"] == "classification" and got["labelled"] == 4 and got["accuracy"] == 0.75
    assert list(got["by_version"]) == ["1", "2"]
    assert got["by_version"]["1"]["accuracy"] == 0.5 and got["by_version"]["2"]["accuracy"] == 1.0
    assert summarize([], classifier=False) == {
        "task": "regression",
        "labelled": 0,
        "mae": None,
        "rmse": None,
        "by_version": {},
    }


def test_metric_names_are_those_of_nb2prod_metrics() -> None:
    assert metric_names(True) == metrics.CLASSIFICATION == (metrics.ACCURACY, metrics.F1_MACRO)
    assert metric_names(False) == metrics.REGRESSION == (metrics.MAE, metrics.RMSE)
    keys = set(typing.get_type_hints(QualityMetrics)) - {"labelled"}
    assert keys == {*metrics.CLASSIFICATION, *metrics.REGRESSION}
    # the direction a comparison of live figures uses
    assert not metrics.lower_is_better(metrics.F1_MACRO) and metrics.lower_is_better(metrics.RMSE)
