"""PSI: the one implementation the service's /drift and nb2prod monitor share."""

from __future__ import annotations

import numpy as np


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


def test_psi_rows_is_psi_of_each_row() -> None:
    from nb2prod.serving.drift import psi, psi_rows

    expected = [0.1, 0.2, 0.3, 0.4]
    counts = np.array([[10, 20, 30, 40], [0, 0, 0, 0], [100, 0, 0, 1], [1, 2, 3, 4]])
    rows = psi_rows(expected, counts)
    assert rows[1] is None  # no count: no index
    for got, row in zip(rows, counts, strict=True):
        if row.sum():
            assert got == psi(expected, row)
    # half an observation per bin, expected fractions clipped at 1e-4 and renormalised
    exp = np.clip(np.array([0.0, 1.0]), 1e-4, None)
    exp = exp / exp.sum()
    obs = np.array([5.5, 0.5]) / 6.0
    assert abs(psi([0.0, 1.0], [5, 0]) - float(np.sum((obs - exp) * np.log(obs / exp)))) < 1e-12


def test_the_drift_report_of_a_window() -> None:
    import json

    from nb2prod.serving.drift import MIN_ROWS, report
    from nb2prod.serving.manifest import Target

    reference = {"x": {"drift_edges": ["-inf", 1.0, "inf"], "drift_fractions": [0.5, 0.5]}}
    target = Target(name="y", profile={"frequencies": {"0": 0.5, "1": 0.5}})
    few = [(json.dumps({"x": 0.5}), json.dumps({"prediction": 0}))] * (MIN_ROWS - 1)
    assert report(few, reference, target, threshold=0.25, window=100)["status"] == "insufficient_data"
    shifted = [(json.dumps({"x": 5.0}), json.dumps({"prediction": 1}))] * 100
    out = report(shifted, reference, target, threshold=0.25, window=100)
    assert out["status"] == "drift" and out["drifted"] == ["x", "__prediction__"]
    assert out["prediction"]["against"] == "y"
    assert report(shifted, reference, None, threshold=0.25, window=100)["prediction"] is None
