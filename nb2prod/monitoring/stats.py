"""Drift statistics: PSI, two-sample KS and chi-squared, from raw samples or from drift sketches.

Everything here is numpy; scipy is imported inside the functions that need a
distribution (``kstwo``, ``chi2``), so importing this module stays light.

Which test: a numeric column (a profile with drift bins) gets the two-sample
Kolmogorov-Smirnov test of the live values against the profile's KS reference
sample (``ks_values``/``ks_counts``, up to 1000 evenly spaced order statistics of
the training column; the whole column when it had at most 1000 finite values), read
exactly from the sketch's KS grid. A categorical, string or bool column (a profile
with ``frequencies``) gets Pearson's chi-squared test of the 2 x K table (reference
counts = frequencies x the reference's non-null count, live counts), as
``scipy.stats.chi2_contingency`` computes it (Yates' correction when one degree of
freedom is left). A numeric profile captured before KS samples existed falls back to
chi-squared on its PSI bins.

The drift decision (:func:`column_drift`), the rule of thumb of the credit-risk PSI
and of Evidently's defaults combined:

* ``PSI > psi_threshold`` (0.25: the conventional "significant shift"), or
* ``p < p_threshold`` (0.01) **and** an effect size of at least ``min_effect`` (0.1):
  the KS statistic D (the largest gap between the two CDFs) for numeric columns, the
  total variation distance (half the L1 distance between the two distributions, the
  categorical analogue of D) for the others. With a million live rows any shift makes
  p tiny; the effect-size floor keeps a negligible shift from counting as drift, as
  Evidently's distance-based defaults for large samples (threshold 0.1) do.

No decision is taken on fewer than ``min_rows`` (50) non-null live values: the
statistics are still computed, ``drifted`` stays False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nb2prod.serving import sketch as sk
from nb2prod.serving.drift import psi, psi_rows  # the one PSI of nb2prod: the service's

__all__ = [
    "ColumnDrift",
    "chi2_2samp",
    "column_drift",
    "expected_fractions",
    "ks_2samp",
    "ks_from_sketch",
    "ks_pvalue",
    "mcnemar_exact",
    "paired_bootstrap",
    "psi",
    "psi_rows",
    "reference_counts",
]

PSI_THRESHOLD = 0.25
P_THRESHOLD = 0.01
MIN_EFFECT = 0.1
MIN_ROWS = 50


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column over a window.

    Attributes:
        psi: PSI on the reference bins (None when the profile has none or no live value).
        test: ``"ks"``, ``"chi2"`` or None (no test possible).
        statistic: KS D, or the chi-squared statistic.
        p_value: The test's p-value.
        effect: Effect size: KS D, or the total variation distance (chi-squared).
        n: Non-null live values.
        nulls: Null live values.
        n_reference: Size of the reference sample the test used.
        drifted: The decision (see the module docstring).
    """

    psi: float | None
    test: str | None
    statistic: float | None
    p_value: float | None
    effect: float | None
    n: int
    nulls: int
    n_reference: int
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (NaN as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Two-sided KS p-value as ``scipy.stats.ks_2samp(method="asymp")``: ``kstwo.sf(d, round(n1*n2/(n1+n2)))``.

    scipy's default (``method="auto"``) is exact when both samples have at most
    10,000 values; this is the asymptotic one at every size (the live side of a
    sketch is usually large; for small samples it is a slightly different p).
    """
    from scipy.stats import kstwo

    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks_2samp(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sample KS test on raw samples: ``(statistic, pvalue)`` (NaN values are dropped).

    The statistic equals ``scipy.stats.ks_2samp(a, b).statistic``; the p-value is
    scipy's ``method="asymp"`` (see :func:`ks_pvalue`).

    Raises:
        ValueError: A sample has no value.
    """
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    x = x[~np.isnan(x)]
    y = y[~np.isnan(y)]
    n1, n2 = x.shape[0], y.shape[0]
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_2samp needs at least one value in each sample")
    both = np.concatenate([x, y])
    diff = np.searchsorted(x, both, side="right") / n1 - np.searchsorted(y, both, side="right") / n2
    d = float(max(np.clip(-diff.min(), 0, 1), diff.max()))
    return d, ks_pvalue(d, n1, n2)


def _ks_grid(profile: Mapping[str, Any], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference multiplicities, live intervals, live equals) of a numeric sketch."""
    ref = np.asarray(profile.get("ks_counts") or [], dtype=np.int64)
    m = ref.shape[0]
    start = 1 + sk.psi_bins(profile)
    grid = np.asarray(counts, dtype=np.int64)[start:]
    if grid.shape[0] != 2 * m + 1:
        raise ValueError(
            f"a sketch of {len(counts)} cells does not fit this profile ({sk.sketch_size(profile)})"
        )
    return ref, grid[: m + 1], grid[m + 1 :]


def ks_from_sketch(
    profile: Mapping[str, Any], counts: Sequence[int] | np.ndarray
) -> tuple[float, float, int]:
    """Exact two-sample KS of (the profile's KS reference sample, the live values of a sketch).

    Both empirical CDFs are steps; their largest gap is at a reference point or just
    below one, and the sketch holds the live counts at exactly those places.

    Args:
        profile: A numeric profile with ``ks_values``/``ks_counts``.
        counts: Its (summed) sketch.

    Returns:
        ``(statistic, pvalue, n)``: D equal to ``scipy.stats.ks_2samp(reference sample, live).statistic``,
        the asymptotic p-value (:func:`ks_pvalue`), and n live non-null values. With no
        live value or no reference sample, ``(nan, nan, n)``.
    """
    ref, between, equal = _ks_grid(profile, np.asarray(counts))
    n_ref = int(ref.sum())
    n = int(between.sum() + equal.sum())
    if n == 0 or n_ref == 0:
        return math.nan, math.nan, n
    cum_ref = np.cumsum(ref)
    # live count <= u_j (at the point) and < u_j (just below it)
    below = np.cumsum(between[:-1]) + np.concatenate(([0], np.cumsum(equal)[:-1]))
    at = below + equal
    ref_below = np.concatenate(([0], cum_ref[:-1]))
    diff = np.concatenate((ref_below / n_ref - below / n, cum_ref / n_ref - at / n))
    d = float(max(np.clip(-diff.min(), 0, 1), diff.max()))
    return d, ks_pvalue(d, n_ref, n), n


def chi2_2samp(
    counts_ref: Sequence[float] | np.ndarray,
    counts_live: Sequence[float] | np.ndarray,
    *,
    correction: bool = True,
) -> tuple[float, float, int]:
    """Pearson's chi-squared test of homogeneity of two count vectors (a 2 x K table).

    As ``scipy.stats.chi2_contingency([counts_ref, counts_live])`` after dropping the
    categories empty in both (Yates' correction when one degree of freedom is left and
    ``correction``).

    Returns:
        ``(statistic, pvalue, dof)``; ``(nan, nan, 0)`` when either side is empty, and
        ``(0.0, 1.0, 0)`` when a single category is left.
    """
    table = np.vstack([np.asarray(counts_ref, dtype=np.float64), np.asarray(counts_live, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if rows[0] <= 0 or rows[1] <= 0:
        return math.nan, math.nan, 0
    dof = table.shape[1] - 1
    if dof == 0:
        return 0.0, 1.0, 0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    observed = table
    if dof == 1 and correction:
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    stat = float(np.sum((observed - expected) ** 2 / expected))
    from scipy.stats import chi2

    return stat, float(chi2.sf(stat, dof)), dof


def reference_counts(profile: Mapping[str, Any], n_reference: int | None = None) -> np.ndarray:
    """Reference counts on the PSI bins: fractions x the reference's non-null count (rounded).

    Categorical profiles: frequency keys in order, then ``__other__``; numeric ones:
    the drift bins.
    """
    n_ref = int(profile.get("count") or 0) if n_reference is None else int(n_reference)
    return np.rint(np.asarray(expected_fractions(profile), dtype=np.float64) * n_ref)


def expected_fractions(profile: Mapping[str, Any]) -> list[float]:
    """Reference fractions on the PSI bins (empty for a profile without drift bins)."""
    kind = sk.layout(profile)
    if kind == sk.NUMERIC:
        return [float(v) for v in profile["drift_fractions"]]
    if kind == sk.CATEGORICAL:
        freqs = profile["frequencies"]
        return [float(freqs[k]) for k in freqs if k != sk.OTHER] + [float(freqs.get(sk.OTHER, 0.0))]
    return []


def column_drift(
    profile: Mapping[str, Any],
    counts: Sequence[int] | np.ndarray,
    *,
    n_reference: int | None = None,
    psi_threshold: float = PSI_THRESHOLD,
    p_threshold: float = P_THRESHOLD,
    min_effect: float = MIN_EFFECT,
    min_rows: int = MIN_ROWS,
) -> ColumnDrift:
    """Drift of one column: PSI, the fitting test and the decision (see the module docstring).

    Args:
        profile: The column's reference profile (``ColumnProfile.to_dict()``).
        counts: Its summed sketch over the window (``serving/sketch.py`` layout).
        n_reference: Reference rows for chi-squared (default: the profile's non-null ``count``).
        psi_threshold: PSI above which the column drifted.
        p_threshold: p-value below which the test counts (with ``min_effect``).
        min_effect: Smallest KS D / total variation distance that counts as drift.
        min_rows: Fewest non-null live values to decide on.

    Raises:
        ValueError: ``counts`` is not a sketch of this profile.
    """
    vec = np.asarray(counts, dtype=np.int64)
    size = sk.sketch_size(profile)
    if vec.shape != (size,):
        raise ValueError(f"a sketch of {vec.shape[0]} cells does not fit this profile ({size})")
    nulls = int(vec[0])
    kind = sk.layout(profile)
    bins = sk.psi_bins(profile)
    live = vec[1 : 1 + bins]
    n = int(live.sum())  # every non-null value falls in exactly one PSI bin
    if kind == sk.NULLS_ONLY or n == 0:
        return ColumnDrift(None, None, None, None, None, n, nulls, 0, False)
    expected = expected_fractions(profile)
    value_psi = psi(expected, live)
    test: str
    if kind == sk.NUMERIC and profile.get("ks_counts"):
        test = "ks"
        stat, p, _ = ks_from_sketch(profile, vec)
        effect = stat
        n_ref = int(sum(int(c) for c in profile["ks_counts"]))
    else:
        test = "chi2"
        ref = reference_counts(profile, n_reference)
        stat, p, _ = chi2_2samp(ref, live)
        n_ref = int(ref.sum())
        effect = 0.5 * float(np.abs(ref / ref.sum() - live / n).sum()) if n_ref else math.nan
    drifted = n >= min_rows and (
        value_psi > psi_threshold or (p == p and p < p_threshold and effect >= min_effect)
    )
    return ColumnDrift(
        psi=value_psi,
        test=test,
        statistic=stat,
        p_value=p,
        effect=effect,
        n=n,
        nulls=nulls,
        n_reference=n_ref,
        drifted=bool(drifted),
    )


# --- paired comparisons of two models on the same rows (the shadow decision) ----------------


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the challenger is right more often than the champion.

    Args:
        b: Rows only the challenger got right.
        c: Rows only the champion got right.

    Returns:
        ``P(X >= b)`` for ``X ~ Binomial(b + c, 1/2)`` (1.0 without a discordant row).
    """
    n = b + c
    if n == 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(b - 1, n, 0.5))


def paired_bootstrap(
    champion: np.ndarray,
    challenger: np.ndarray,
    metric: Any,
    *,
    rounds: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired bootstrap of ``metric(challenger rows) - metric(champion rows)`` on the same resampled rows.

    Args:
        champion: Per-row inputs of ``metric`` for the champion (e.g. (prediction, label) pairs).
        challenger: The same for the challenger, row for row.
        metric: Function of an array of rows to a number (higher is better).
        rounds: Bootstrap resamples.
        seed: The resampling seed (the decision is reproducible).

    Returns:
        (observed difference, one-sided p-value: the share of resamples where the difference is <= 0).
    """
    n = len(champion)
    if n == 0:
        return 0.0, 1.0
    observed = float(metric(challenger) - metric(champion))
    rng = np.random.default_rng(seed)
    worse = 0
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        if metric(challenger[idx]) - metric(champion[idx]) <= 0:
            worse += 1
    return observed, (worse + 1) / (rounds + 1)
