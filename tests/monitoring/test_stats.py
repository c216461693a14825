"""Drift statistics and sketches against scipy.stats on the same samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats as ss
from sklearn.datasets import load_wine

from nb2prod.capture.data import summarize
from nb2prod.monitoring.stats import (
    chi2_2samp,
    column_drift,
    ks_2samp,
    ks_from_sketch,
    psi,
    psi_rows,
    reference_counts,
)
from nb2prod.serving import drift
from nb2prod.serving.sketch import decode, encode, sketch, sketch_size, sum_blobs


def profile_of(values: Any, name: str = "x") -> dict[str, Any]:
    return summarize(pd.DataFrame({name: values}))[1][name].to_dict()


def reference_sample(profile: dict[str, Any]) -> np.ndarray:
    return np.repeat(np.asarray(profile["ks_values"], dtype=float), profile["ks_counts"])


RNG = np.random.default_rng(7)
SAMPLES = {
    "normal": (RNG.normal(size=3000), RNG.normal(0.1, 1.1, size=20000)),
    "lognormal, small": (RNG.lognormal(size=40), RNG.lognormal(0.3, size=25)),
    "ints with ties": (RNG.integers(0, 12, size=5000), RNG.integers(0, 14, size=800)),
    "rounded, many ties": (RNG.normal(size=800).round(1), RNG.normal(0.05, size=50000).round(1)),
    "exponential vs uniform": (RNG.exponential(size=1500), RNG.uniform(0, 3, size=1500)),
    "identical": (np.arange(100.0), np.arange(100.0)),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_ks_2samp_matches_scipy(name: str) -> None:
    a, b = SAMPLES[name]
    d, p = ks_2samp(a, b)
    want = ss.ks_2samp(a, b, method="asymp")
    assert d == want.statistic
    assert p == pytest.approx(want.pvalue, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_ks_from_sketch_is_exact_against_the_reference_sample(name: str) -> None:
    train, live = SAMPLES[name]
    profile = profile_of(train)
    ref = reference_sample(profile)
    assert len(ref) == min(len(train), 1000)
    live = np.asarray(live, dtype=float)
    with_nulls = [*np.concatenate([live, [np.nan, np.nan]]).tolist(), None]
    counts = sketch(profile, with_nulls)
    assert counts.shape == (sketch_size(profile),)
    assert counts[0] == 3
    d, p, n = ks_from_sketch(profile, counts)
    want = ss.ks_2samp(ref, live, method="asymp")
    assert n == len(live)
    assert d == want.statistic
    assert p == want.pvalue


def test_reference_sample_is_deterministic_order_statistics() -> None:
    values = np.random.default_rng(1).normal(size=10_007)
    a, b = profile_of(values), profile_of(values[::-1].copy())
    assert a["ks_values"] == b["ks_values"] and a["ks_counts"] == b["ks_counts"]
    assert sum(a["ks_counts"]) == 1000
    want = np.sort(values)[np.rint(np.linspace(0, len(values) - 1, 1000)).astype(int)]
    assert np.array_equal(reference_sample(a), want)


def test_sketch_is_additive_and_infinities_are_values() -> None:
    profile = profile_of(np.random.default_rng(2).gamma(2.0, size=4000))
    x = np.random.default_rng(3).gamma(2.2, size=9000)
    x[::97] = np.nan
    x[5] = np.inf
    x[6] = -np.inf
    parts = [x[:1], x[1:1000], x[1000:1000], x[1000:]]
    total = np.sum([sketch(profile, p) for p in parts], axis=0)
    assert np.array_equal(total, sketch(profile, x))
    assert total[0] == np.isnan(x).sum()
    bins = len(profile["drift_fractions"])
    assert total[1 : 1 + bins].sum() == len(x) - total[0]  # every non-null value in one PSI bin
    assert total[1 + bins :].sum() == len(x) - total[0]  # and in one KS cell


def test_psi_matches_the_service_and_the_sketch_bins() -> None:
    train = np.random.default_rng(4).normal(size=2000)
    live = np.random.default_rng(5).normal(0.3, size=700)
    profile = profile_of(train)
    counts = sketch(profile, live)
    bins = len(profile["drift_fractions"])
    assert psi(profile["drift_fractions"], counts[1 : 1 + bins]) == pytest.approx(
        drift.column_psi(profile, live.tolist()), rel=1e-12
    )
    assert psi([0.5, 0.5], [50, 50]) == pytest.approx(0.0)


def test_psi_is_the_service_psi_once() -> None:
    rng = np.random.default_rng(9)
    expected = rng.random(10)
    counts = rng.integers(0, 200, size=(6, 10))
    counts[2] = 0
    assert psi(expected, counts[0]) == drift.psi(expected.tolist(), counts[0].tolist())
    rows = psi_rows(expected, counts)
    assert rows[2] is None
    assert rows == [None if r.sum() == 0 else drift.psi(expected.tolist(), r.tolist()) for r in counts]


def test_categorical_sketch_chi2_matches_scipy_with_unseen_categories() -> None:
    rng = np.random.default_rng(6)
    train = pd.Series(rng.choice(["a", "b", "c", "d"], p=[0.4, 0.3, 0.2, 0.1], size=3000), dtype="category")
    profile = profile_of(train)
    live = [*rng.choice(["a", "b", "c", "zz", "yy"], p=[0.3, 0.3, 0.2, 0.1, 0.1], size=900).tolist(), None]
    counts = sketch(profile, live)
    keys = [k for k in profile["frequencies"] if k != "__other__"]
    assert counts[0] == 1
    assert counts[-1] == sum(v in ("zz", "yy") for v in live)  # unseen values land in "other"
    assert counts[1 + keys.index("d")] == 0
    ref = reference_counts(profile)
    assert ref.sum() == 3000 and ref[-1] == 0  # no "other" in training: an all-zero column pair stays
    stat, p, dof = chi2_2samp(ref, counts[1:])
    table = np.vstack([ref, counts[1:]])
    want = ss.chi2_contingency(table[:, table.sum(axis=0) > 0])
    assert stat == pytest.approx(want.statistic, rel=1e-12)
    assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    assert dof == want.dof == 4
    result = column_drift(profile, counts)
    assert result.test == "chi2" and result.drifted and result.n == 900 and result.nulls == 1


@pytest.mark.parametrize(
    "ref,live",
    [([30, 0, 70], [10, 0, 5]), ([12, 8], [3, 9]), ([500, 400, 100], [5, 4, 1]), ([5, 0], [7, 0])],
)
def test_chi2_matches_chi2_contingency(ref: list[int], live: list[int]) -> None:
    stat, p, dof = chi2_2samp(ref, live)
    table = np.array([ref, live])
    kept = table[:, table.sum(axis=0) > 0]
    if kept.shape[1] == 1:
        assert (stat, p, dof) == (0.0, 1.0, 0)
        return
    want = ss.chi2_contingency(kept)
    assert stat == pytest.approx(want.statistic, rel=1e-12)
    assert p == pytest.approx(want.pvalue, rel=1e-12)
    assert dof == want.dof


def test_bool_and_int_labels_match_profile_keys() -> None:
    profile = profile_of(pd.Series([True, False, True, True]))
    counts = sketch(profile, np.array([True, True, False]))
    assert counts.tolist() == [0, 2, 1, 0]


def test_column_drift_decision_on_real_data() -> None:
    wine = load_wine(as_frame=True).frame
    train, held = wine.iloc[::2], wine.iloc[1::2]
    profile = summarize(train)[1]["alcohol"].to_dict()
    same = column_drift(profile, sketch(profile, held["alcohol"].to_numpy()))
    shifted = column_drift(profile, sketch(profile, held["alcohol"].to_numpy() * 1.05 + 0.5))
    assert same.p_value is not None and shifted.p_value is not None and shifted.psi is not None
    assert same.test == "ks" and not same.drifted and same.p_value > 0.01
    assert shifted.drifted and shifted.psi > 0.25 and shifted.p_value < 1e-6
    # large samples with a negligible shift (2 points of share): p is tiny, the effect size is not
    rng = np.random.default_rng(8)
    prof = profile_of(pd.Series(rng.choice(["a", "b"], p=[0.5, 0.5], size=100_000)))
    tiny = column_drift(prof, sketch(prof, rng.choice(["a", "b"], p=[0.52, 0.48], size=200_000)))
    assert tiny.p_value is not None and tiny.effect is not None and tiny.psi is not None
    assert tiny.p_value < 0.01 and tiny.effect < 0.1 and tiny.psi < 0.25 and not tiny.drifted
    # too few rows: statistics, no verdict
    few = column_drift(profile, sketch(profile, held["alcohol"].to_numpy()[:20] * 3))
    assert few.psi is not None and few.psi > 0.25 and not few.drifted
    empty = column_drift(profile, sketch(profile, [None, math.nan]))
    assert empty.n == 0 and empty.nulls == 2 and empty.psi is None and not empty.drifted


def test_profiles_without_drift_info_sketch_nulls_only() -> None:
    profile = profile_of(pd.to_datetime(pd.Series(["2024-01-01", None, "2024-01-03"])))
    assert sketch_size(profile) == 1
    assert sketch(profile, ["2024-01-01", None]).tolist() == [1]
    assert column_drift(profile, [1]).test is None


def test_encoding_round_trips_and_sums() -> None:
    profile = profile_of(np.random.default_rng(10).normal(size=5000))
    size = sketch_size(profile)
    rng = np.random.default_rng(11)
    vectors = [sketch(profile, rng.normal(size=k)) for k in (0, 1, 300, 50_000)]
    big = np.zeros(size, dtype=np.int64)
    big[3] = 200_000  # above a uint16 pair: split over several pairs
    vectors.append(big)
    blobs = [encode(v) for v in vectors]
    assert len(blobs[2]) < 8 * size / 4  # sparse: a few hundred pairs of 4 bytes
    full = np.full(size, 10**6, dtype=np.int64)
    assert len(encode(full)) == 8 * size  # every cell needs several pairs: plain int64 is shorter
    assert np.array_equal(decode(encode(full), size), full)
    for v, b in zip(vectors, blobs, strict=True):
        assert np.array_equal(decode(b, size), v)
    matrix, skipped = sum_blobs([*blobs, b"\x00" * 24, encode(full)], [0, 1, 1, 0, 1, 0, 0], 2, size)
    assert skipped == 1
    assert np.array_equal(matrix[0], vectors[0] + vectors[3] + full)
    assert np.array_equal(matrix[1], vectors[1] + vectors[2] + vectors[4])
