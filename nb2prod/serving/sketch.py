"""Drift sketches: fixed-size count vectors of one column, laid out by its reference profile.

A sketch is additive: the sketch of a concatenation is the sum of the sketches, so
the service's writer sketches each drained batch, keeps one running vector per
(minute, model version, column) and upserts it; readers add the stored rows up.
Drift over a million logged rows is then a sum of small vectors, not a scan.

Layouts (``int64``, see :func:`sketch_size`):

* Numeric profile (``drift_edges``/``drift_fractions``)::

      [n_null,
       counts on the PSI bins (len(drift_fractions)),
       KS grid: for the m sorted unique reference points u (``ks_values``):
         counts strictly between consecutive points (m + 1 intervals:
         x < u[0], u[0] < x < u[1], ..., x > u[m-1]),
         counts equal to each point (m)]

  The two-sample KS statistic of (reference sample, live values) is computed
  exactly from it: both empirical CDFs are steps, and their largest gap is at a
  reference point or just below one. PSI bins follow ``capture/data.py``: bin ``i``
  holds ``edges[i] <= x < edges[i+1]``. ±inf are values (first / last bin and
  interval); None and NaN are nulls. A profile without ``ks_values`` (captured before
  they existed) has m = 0: one interval holding every value.
* Categorical profile (``frequencies``)::

      [n_null, count per frequencies key (in the profile's order, "__other__" excluded), other]

  A value is matched by ``str(value)``, as the profile's keys were written.
* Any other profile (datetime, all-null column): ``[n_null]`` (size 1), so the null
  rate is still watched.

Stored encoding (:func:`encode` / :func:`decode`): the plain little-endian int64
bytes of the vector (``8 * size`` bytes), or, when strictly shorter, a sparse form:
(index, count) pairs of little-endian uint16, or uint32 when the sketch has more
than 65,535 cells, the first pair being a header ``(format, 0)`` (format 1: uint16,
2: uint32); a count too large for a pair is split over several pairs. The length
tells the forms apart (``8 * size`` is plain), and the header's count of 0 lets
many blobs be concatenated and summed as they are, in one ``numpy.bincount``
(:func:`sum_blobs`). A minute of a few hundred rows on a 2,000-cell KS grid is
~1.5 kB instead of 16 kB.

This module is copied into the Bento with the rest of ``serving/``: it imports
nothing from nb2prod, and only numpy and the standard library.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OTHER = "__other__"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
NULLS_ONLY = "nulls"

_SPARSE16 = 1
_SPARSE32 = 2
_PAIR16 = np.dtype([("i", "<u2"), ("c", "<u2")])
_PAIR32 = np.dtype([("i", "<u4"), ("c", "<u4")])


def layout(profile: Mapping[str, Any]) -> str:
    """``"numeric"``, ``"categorical"`` or ``"nulls"``: which layout ``profile`` gives a sketch."""
    if profile.get("drift_edges") and profile.get("drift_fractions"):
        return NUMERIC
    if profile.get("frequencies"):
        return CATEGORICAL
    return NULLS_ONLY


def psi_bins(profile: Mapping[str, Any]) -> int:
    """Number of PSI bins of a numeric profile (drift bins) or categorical one (keys + other)."""
    kind = layout(profile)
    if kind == NUMERIC:
        return len(profile["drift_fractions"])
    if kind == CATEGORICAL:
        return len([k for k in profile["frequencies"] if k != OTHER]) + 1
    return 0


def ks_points(profile: Mapping[str, Any]) -> np.ndarray:
    """The sorted unique reference points of the KS grid (empty when the profile has none)."""
    values = profile.get("ks_values") or []
    return np.array([float(v) for v in values], dtype=np.float64)


def sketch_size(profile: Mapping[str, Any]) -> int:
    """Length of the sketch vector of a column with this reference ``profile``."""
    kind = layout(profile)
    if kind == NUMERIC:
        m = len(profile.get("ks_values") or [])
        return 1 + psi_bins(profile) + 2 * m + 1
    if kind == CATEGORICAL:
        return 1 + psi_bins(profile)
    return 1


class Sketcher:
    """The sketch function of one column, with its edges, grid and key slots prepared once.

    Args:
        profile: The column's reference profile (``ColumnProfile.to_dict()``).
    """

    def __init__(self, profile: Mapping[str, Any]) -> None:
        self.kind = layout(profile)
        self.size = sketch_size(profile)
        self.bins = psi_bins(profile)
        if self.kind == NUMERIC:
            edges = [float(v) for v in profile["drift_edges"]]
            self._inner = np.array(edges[1:-1], dtype=np.float64)
            self._points = ks_points(profile)
        elif self.kind == CATEGORICAL:
            keys = [k for k in profile["frequencies"] if k != OTHER]
            self._slots = {k: 1 + i for i, k in enumerate(keys)}

    def __call__(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        """The sketch (``int64`` vector of :attr:`size`) of ``values`` (None / NaN are nulls)."""
        if self.kind == NUMERIC:
            return self._numeric(values)
        if self.kind == CATEGORICAL:
            return self._categorical(values)
        out = np.zeros(1, dtype=np.int64)
        out[0] = _count_nulls(values)
        return out

    def _numeric(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        # One sort (numpy's SIMD sort), then binary searches of the few edges and grid
        # points into it: ~5x faster on 1 M values than searching each value in the grid.
        xs = np.sort(_floats(values))
        n = int(np.searchsorted(xs, np.nan, side="left"))  # NaNs sort last
        out = np.zeros(self.size, dtype=np.int64)
        out[0] = xs.shape[0] - n
        if n == 0:
            return out
        xs = xs[:n]
        bins = self.bins
        psi = out[1 : 1 + bins]
        cuts = np.searchsorted(xs, self._inner, side="left")  # values < each inner edge
        psi[0] = cuts[0] if bins > 1 else n
        if bins > 1:
            psi[1:-1] = cuts[1:] - cuts[:-1]
            psi[-1] = n - cuts[-1]
        points = self._points
        m = points.shape[0]
        grid = out[1 + bins :]
        if m == 0:
            grid[0] = n
            return out
        below = np.searchsorted(xs, points, side="left")  # values < u_j
        upto = np.searchsorted(xs, points, side="right")  # values <= u_j
        grid[0] = below[0]
        grid[1:m] = below[1:] - upto[:-1]  # strictly between u_{j-1} and u_j
        grid[m] = n - upto[-1]
        grid[m + 1 :] = upto - below
        return out

    def _categorical(self, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.int64)
        items = values.tolist() if isinstance(values, np.ndarray) else values
        slots = self._slots
        other = self.size - 1
        for value, count in Counter(_hashable(v) for v in items).items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out[0] += count
            else:
                out[slots.get(value if isinstance(value, str) else str(value), other)] += count
        return out


def sketch(profile: Mapping[str, Any], values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """The sketch of ``values`` against ``profile`` (see the module docstring for the layout).

    For many calls with the same profile, build one :class:`Sketcher` and call it.

    Args:
        profile: The column's reference profile (``ColumnProfile.to_dict()``).
        values: A sequence or numpy array; None and NaN count as nulls.

    Returns:
        An ``int64`` vector of ``sketch_size(profile)``.
    """
    return Sketcher(profile)(values)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return str(value)
    return value


def _count_nulls(values: Sequence[Any] | np.ndarray) -> int:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fc":
        return int(np.count_nonzero(np.isnan(values)))
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return sum(1 for v in items if v is None or (isinstance(v, float) and math.isnan(v)))


def _floats(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Values as a flat float64 array; None, NaN and anything that is not a number become NaN."""
    try:
        xs = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        items = values.tolist() if isinstance(values, np.ndarray) else values
        xs = np.array([_to_float(v) for v in items], dtype=np.float64)
    return xs.reshape(-1)


def _to_float(value: Any) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------- stored encoding


def encode(counts: np.ndarray) -> bytes:
    """Bytes of a sketch for the store: plain int64, or the sparse pairs when shorter."""
    vec = np.asarray(counts, dtype=np.int64)
    dense = vec.astype("<i8").tobytes()
    if vec.size and vec.min() < 0:
        return dense
    small = vec.shape[0] <= 0xFFFF
    dtype, limit = (_PAIR16, 0xFFFF) if small else (_PAIR32, 0xFFFFFFFF)
    nz = np.flatnonzero(vec)
    values = vec[nz]
    # counts above the pair's limit become several pairs on the same index
    repeats = (values + limit - 1) // limit
    n_pairs = 1 + int(repeats.sum())
    if n_pairs * dtype.itemsize >= len(dense):
        return dense
    pairs = np.zeros(n_pairs, dtype=dtype)
    pairs[0] = (_SPARSE16 if small else _SPARSE32, 0)
    pairs["i"][1:] = np.repeat(nz, repeats)
    chunks = np.full(n_pairs - 1, limit, dtype=np.int64)
    chunks[np.cumsum(repeats) - 1] = values - (repeats - 1) * limit
    pairs["c"][1:] = chunks
    return pairs.tobytes()


def _pair_dtype(blob: bytes | memoryview, size: int) -> np.dtype | None:
    """The pair dtype of a sparse blob (None: not a sparse sketch)."""
    n = len(blob)
    if n == 8 * size or n < 4:
        return None
    if blob[0] == _SPARSE16 and n % 4 == 0:
        return _PAIR16
    if blob[0] == _SPARSE32 and n % 8 == 0:
        return _PAIR32
    return None


def decode(blob: bytes, size: int) -> np.ndarray:
    """The sketch vector of a stored blob (see :func:`encode`).

    Raises:
        ValueError: The blob is not a sketch of ``size`` cells.
    """
    if len(blob) == 8 * size:
        return np.frombuffer(blob, dtype="<i8").astype(np.int64)
    dtype = _pair_dtype(blob, size)
    pairs = None if dtype is None else np.frombuffer(blob, dtype=dtype)[1:]
    if pairs is None or (pairs.size and int(pairs["i"].max()) >= size):
        raise ValueError(f"not a sketch of {size} cells ({len(blob)} bytes)")
    return np.bincount(pairs["i"].astype(np.intp), weights=pairs["c"], minlength=size).astype(np.int64)


def sum_blobs(
    blobs: Sequence[bytes], groups: Sequence[int] | np.ndarray, n_groups: int, size: int
) -> tuple[np.ndarray, int]:
    """Sum stored sketches per group: one ``bincount`` over all the sparse pairs.

    Args:
        blobs: Stored sketch blobs of one column.
        groups: The group (0 .. n_groups-1) of each blob, e.g. a (model version, time bucket) index.
        n_groups: Number of groups.
        size: The column's sketch size.

    Returns:
        ``(matrix, skipped)``: an ``(n_groups, size)`` int64 matrix of summed counts, and the
        number of blobs skipped because they are not sketches of ``size`` cells (a profile
        that changed under the writer).
    """
    total = np.zeros((n_groups, size), dtype=np.int64)
    if not len(blobs):
        return total, 0
    group = np.asarray(groups, dtype=np.intp)
    lens = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    first = np.frombuffer(bytes(b[0] if len(b) else 0 for b in blobs), dtype=np.uint8)
    dense = lens == 8 * size
    sparse = {
        _PAIR16: ~dense & (first == _SPARSE16) & (lens % 4 == 0) & (lens >= 4),
        _PAIR32: ~dense & (first == _SPARSE32) & (lens % 8 == 0) & (lens >= 8),
    }
    skipped = int(len(blobs) - dense.sum() - sum(int(m.sum()) for m in sparse.values()))
    for i in np.flatnonzero(dense):
        total[group[i]] += np.frombuffer(blobs[int(i)], dtype="<i8")
    for dtype, mask in sparse.items():
        if not mask.any():
            continue
        chosen = np.flatnonzero(mask)
        # concatenated as they are: each blob's header pair has a count of 0 and adds nothing
        pairs = np.frombuffer(b"".join([blobs[int(i)] for i in chosen]), dtype=dtype)
        per_blob = lens[chosen] // dtype.itemsize
        index = pairs["i"].astype(np.intp)
        weight = pairs["c"]
        bad = (index >= size) & (weight > 0)
        if bad.any():
            owner = np.repeat(np.arange(chosen.shape[0]), per_blob)
            dropped = np.unique(owner[bad])
            skipped += int(dropped.shape[0])
            ok = ~np.isin(owner, dropped)
            index, weight, chosen_owner = index[ok], weight[ok], owner[ok]
            flat = group[chosen][chosen_owner] * size + index
        else:
            flat = np.repeat(group[chosen] * size, per_blob) + index
        # a header's index may pass the row's end: its weight is 0, the spill is cut off below
        summed = np.bincount(flat, weights=weight, minlength=n_groups * size)[: n_groups * size]
        total += np.rint(summed).astype(np.int64).reshape(n_groups, size)
    return total, skipped
