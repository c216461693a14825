"""Schema and profile: real scikit-learn data and small synthetic frames, checked against numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from nb2prod.capture.data import describe
from nb2prod.capture.hashing import digest_frame
from nb2prod.capture.profile import QUANTILE_PROBS, summarize


def test_numeric_profile_matches_numpy(cancer: pd.DataFrame) -> None:
    rec = describe(cancer, name="cancer", target="target")
    assert rec.source == "dataframe"
    assert (rec.n_rows, rec.n_cols) == cancer.shape
    assert rec.digest == digest_frame(cancer)
    assert rec.n_bytes == cancer.memory_usage(deep=True).sum()
    assert rec.target == "target"
    by_name = {c.name: c for c in rec.schema or ()}
    assert list(by_name) == list(cancer.columns)
    for col in ("mean radius", "worst area", "target"):
        x = cancer[col].to_numpy()
        schema, prof = by_name[col], (rec.profile or {})[col]
        assert schema.kind == ("int" if col == "target" else "float")
        assert schema.dtype == str(cancer[col].dtype)
        assert not schema.nullable
        assert (schema.min, schema.max) == (x.min(), x.max())
        assert prof.null_rate == 0 and prof.count == len(x)
        assert prof.mean == pytest.approx(x.mean(), rel=1e-12)
        assert prof.std == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert prof.quantiles is not None
        assert list(prof.quantiles) == ["0", "0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99", "1"]
        np.testing.assert_allclose(list(prof.quantiles.values()), np.quantile(x, QUANTILE_PROBS), rtol=1e-14)
        counts, edges = np.histogram(x, 10)
        assert prof.hist_counts == tuple(counts)
        np.testing.assert_array_equal(prof.hist_edges, edges)
        de = np.asarray(prof.drift_edges)
        assert de[0] == -np.inf and de[-1] == np.inf and np.all(np.diff(de) > 0)
        np.testing.assert_allclose(de[1:-1], np.unique(np.quantile(x, np.arange(1, 10) / 10)), rtol=1e-14)
        fr = np.asarray(prof.drift_fractions)
        assert fr.sum() == pytest.approx(1.0)
        expected = np.bincount(np.searchsorted(de[1:-1], x, side="right"), minlength=len(fr)) / len(x)
        np.testing.assert_allclose(fr, expected)
    # the binary target has two distinct deciles at most: bins collapse, still sum to 1
    assert len((rec.profile or {})["target"].drift_fractions or ()) <= 3


def test_nulls_infinities_and_nullable_dtypes() -> None:
    df = pd.DataFrame(
        {
            "f": [1.0, np.nan, 3.0, np.inf, -np.inf, 2.0, np.nan, 4.0],
            "I": pd.array([1, None, 3, None, 5, 6, 7, 8], dtype="Int64"),
            "F": pd.array([0.5, None, 1.5, 2.5, None, None, 3.5, 4.5], dtype="Float64"),
            "all_nan": [np.nan] * 8,
        }
    )
    schema, profile = summarize(df)
    s = {c.name: c for c in schema}
    f = profile["f"]
    assert f.null_rate == 2 / 8 and f.count == 6 and f.n_infinite == 2
    assert f.mean == pytest.approx(np.mean([1, 3, 2, 4]))
    assert f.quantiles is not None and f.quantiles["0"] == 1.0 and f.quantiles["1"] == 4.0
    assert (s["f"].min, s["f"].max, s["f"].nullable) == (-np.inf, np.inf, True)
    assert sum(f.drift_fractions or ()) == pytest.approx(1.0)
    assert profile["I"].null_rate == 2 / 8 and s["I"].kind == "int" and s["I"].nullable
    assert (s["I"].min, s["I"].max) == (1, 8) and isinstance(s["I"].min, int)
    assert profile["I"].mean == pytest.approx(np.mean([1, 3, 5, 6, 7, 8]))
    assert profile["F"].null_rate == 3 / 8 and s["F"].kind == "float"
    assert profile["all_nan"].count == 0 and profile["all_nan"].mean is None and s["all_nan"].nullable


def test_categories_strings_bools_and_datetimes() -> None:
    iris = load_iris(as_frame=True).frame
    iris["species"] = pd.Categorical.from_codes(  # type: ignore[call-overload]
        iris["target"], categories=["setosa", "versicolor", "virginica"]
    )
    iris["species"] = iris["species"].cat.reorder_categories(
        ["virginica", "setosa", "versicolor"], ordered=True
    )
    n = len(iris)
    iris["word"] = pd.Series([f"w{i % 60}" if i % 10 else None for i in range(n)], dtype="str")
    iris["flag"] = iris["target"] == 0
    iris["when"] = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    iris["mixed"] = pd.Series([1, "a"] * (n // 2), dtype=object)
    rec = describe(iris, name="iris", role="test", target="species")
    s = {c.name: c for c in rec.schema or ()}
    p = rec.profile or {}

    assert s["species"].kind == "category"
    assert s["species"].categories == ("virginica", "setosa", "versicolor") and s["species"].ordered
    assert p["species"].n_unique == 3
    assert p["species"].frequencies == {
        "setosa": 1 / 3,
        "versicolor": 1 / 3,
        "virginica": 1 / 3,
        "__other__": 0.0,
    }

    assert s["word"].kind == "string" and s["word"].nullable
    assert p["word"].null_rate == pytest.approx(15 / n)
    assert p["word"].n_unique == 54  # w0, w10, ..., w50 only ever fall on None rows
    freqs = p["word"].frequencies or {}
    assert len(freqs) == 51 and "__other__" in freqs
    assert sum(freqs.values()) == pytest.approx(1.0)
    counts = iris["word"].value_counts()
    assert freqs[counts.index[0]] == counts.iloc[0] / counts.sum()
    assert freqs["__other__"] == pytest.approx(counts.iloc[50:].sum() / counts.sum())

    assert s["flag"].kind == "bool"
    assert p["flag"].frequencies == {"False": 100 / 150, "True": 50 / 150, "__other__": 0.0}

    assert s["when"].kind == "datetime" and s["when"].dtype == "datetime64[us, UTC]"
    assert s["when"].min == "2024-01-01T00:00:00+00:00"
    assert p["when"].count == n and p["when"].mean is None
    assert s["mixed"].kind == "other" and p["mixed"].count == n
