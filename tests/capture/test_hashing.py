"""Data digests: every change shows, equal data agrees, files and directories, in any process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xxhash

from nb2prod.capture.hashing import (
    digest_array,
    digest_directory,
    digest_file,
    digest_frame,
    digest_object,
    digest_series,
    directory_digest,
)
from nb2prod.exceptions import DataError

HEX = r"xxh3_128:[0-9a-f]{32}"


# A frame with one column of each kind the digest treats differently; built the same way in a subprocess.
MIXED_FRAME_SRC = textwrap.dedent(
    """
    import numpy as np, pandas as pd
    def mixed_frame():
        n = 6
        idx = pd.MultiIndex.from_arrays([list("aabbcc"), np.arange(n)], names=["grp", "i"])
        return pd.DataFrame(
            {
                "f": [1.5, np.nan, -0.0, 3.25, np.inf, 7.0],
                "f32": np.arange(n, dtype=np.float32),
                "i": np.arange(n, dtype=np.int64) * 10,
                "b": [True, False, True, True, False, False],
                "cat": pd.Categorical(list("xyzxyx"), categories=["z", "y", "x"], ordered=True),
                "s": pd.Series(["a", None, "ccc", "", "dd", "e"], dtype="str"),
                "ns": pd.array(["a", None, "b", "c", "d", "e"], dtype="string"),
                "I": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
                "F": pd.array([0.5, None, 1.0, 2.0, 3.0, 4.0], dtype="Float64"),
                "B": pd.array([True, None, False, True, True, False], dtype="boolean"),
                "t": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
                "td": pd.to_timedelta(np.arange(n), unit="s"),
                "o": pd.Series([1, "x", None, 2.5, (1, "a"), b"raw"], dtype=object),
                "os": pd.Series(["p", "q", None, "r", "s", "t"], dtype=object),
            },
            index=idx,
        )
    """
)


def mixed_frame() -> pd.DataFrame:
    """The frame of ``MIXED_FRAME_SRC``: the subprocess test runs the same source."""
    ns: dict[str, object] = {}
    exec(MIXED_FRAME_SRC, ns)
    return ns["mixed_frame"]()  # type: ignore[operator]


# --------------------------------------------------------------------------- determinism


def test_digest_format_and_same_in_another_process(cancer: pd.DataFrame) -> None:
    code = MIXED_FRAME_SRC + textwrap.dedent(
        """
        from sklearn.datasets import load_breast_cancer
        from nb2prod.capture.hashing import digest_frame, digest_series, digest_array
        cancer = load_breast_cancer(as_frame=True).frame
        print(digest_frame(mixed_frame()))
        print(digest_frame(cancer))
        print(digest_series(cancer["target"]))
        print(digest_array(cancer.to_numpy()))
        """
    )
    ours = [
        digest_frame(mixed_frame()),
        digest_frame(cancer),
        digest_series(cancer["target"]),
        digest_array(cancer.to_numpy()),
    ]
    for seed in ("1", "2"):  # a different str hash seed must not matter
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        assert out.stdout.split() == ours
    for d in ours:
        assert re.fullmatch(HEX, d)
    assert len(set(ours)) == len(ours)


def test_threads_do_not_change_the_digest() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({f"x{i}": rng.standard_normal(300_000) for i in range(16)})  # ~38 MB
    df.loc[::1000, "x3"] = np.nan
    assert digest_frame(df, threads=1) == digest_frame(df, threads=2) == digest_frame(df)


# --------------------------------------------------------------------------- every change shows


def _set(df: pd.DataFrame, col: str, row: int, value: object) -> pd.DataFrame:
    out = df.copy()
    out.iloc[row, out.columns.get_loc(col)] = value  # type: ignore[call-overload]
    return out


def _swap_rows(df: pd.DataFrame) -> pd.DataFrame:
    order = [1, 0, *range(2, len(df))]
    return df.iloc[order]


def _swap_values_keep_index(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["f32"] = out["f32"].to_numpy()[[1, 0, 2, 3, 4, 5]]
    return out


def _with(col: str, values: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out[col] = values.array if isinstance(values, pd.Series) else values  # type: ignore[call-overload]  # no index alignment
        return out

    return change


CHANGES: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "one float cell": lambda df: _set(df, "f", 0, 1.5000000000000002),
    "one int cell": lambda df: _set(df, "i", 5, 51),
    "one string cell": lambda df: _set(df, "s", 0, "b"),
    "string boundary moved": _with("s", pd.array(["a", None, "cc", "c", "dd", "e"], dtype="str")),
    "empty string vs missing": _with("s", pd.array(["a", "", "ccc", "", "dd", "e"], dtype="str")),
    "renamed column": lambda df: df.rename(columns={"f": "g"}),
    "int label vs str label": lambda df: df.set_axis([*df.columns[:-1], 0], axis=1),
    "columns axis name": lambda df: df.rename_axis(columns="features"),
    "dtype int64 -> float64": lambda df: df.astype({"i": "float64"}),
    "dtype float32 -> float64": lambda df: df.astype({"f32": "float64"}),
    "dtype str -> object": lambda df: df.astype({"os": "str"}),
    "dtype Int64 -> Float64": lambda df: df.astype({"I": "Float64"}),
    "row reorder": _swap_rows,
    "values reordered, index kept": _swap_values_keep_index,
    "column reorder": lambda df: df[[df.columns[1], df.columns[0], *df.columns[2:]]],
    "index label": lambda df: df.set_axis(
        pd.MultiIndex.from_arrays([list("aabbcd"), np.arange(6)], names=["grp", "i"])
    ),
    "index name": lambda df: df.rename_axis(index=["grp", "j"]),
    "index level dropped": lambda df: df.droplevel("grp"),
    "category order": lambda df: df.assign(cat=df["cat"].cat.reorder_categories(["x", "y", "z"])),
    "category ordered flag": lambda df: df.assign(cat=df["cat"].cat.as_unordered()),
    "unused category added": lambda df: df.assign(cat=df["cat"].cat.add_categories(["w"])),
    "category values renamed": lambda df: df.assign(cat=df["cat"].cat.rename_categories(["Z", "y", "x"])),
    "NA vs NaN in Float64": _with(
        "F",
        pd.arrays.FloatingArray(np.array([0.5, np.nan, 1.0, 2.0, 3.0, 4.0]), np.zeros(6, dtype=bool)),
    ),
    "NA vs 0 in Int64": _with("I", pd.array([1, 0, 3, 4, 5, 6], dtype="Int64")),
    "NA vs False in boolean": _with("B", pd.array([True, False, False, True, True, False], dtype="boolean")),
    "None vs NaN in object": _with("o", pd.Series([1, "x", np.nan, 2.5, (1, "a"), b"raw"], dtype=object)),
    "None vs pd.NA in object strings": _with("os", pd.Series(["p", "q", pd.NA, "r", "s", "t"], dtype=object)),
    "int vs float in object": _with("o", pd.Series([1.0, "x", None, 2.5, (1, "a"), b"raw"], dtype=object)),
    "tuple vs list in object": _with("o", pd.Series([1, "x", None, 2.5, [1, "a"], b"raw"], dtype=object)),
    "-0.0 vs 0.0": lambda df: _set(df, "f", 2, 0.0),
    "timezone": lambda df: df.assign(t=df["t"].dt.tz_convert("UTC")),
    "datetime unit": lambda df: df.assign(t=df["t"].dt.as_unit("ns")),
    "one timedelta": lambda df: _set(df, "td", 3, pd.Timedelta(seconds=4)),
    "inf vs nan": lambda df: _set(df, "f", 4, np.nan),
    "a column dropped": lambda df: df.drop(columns="td"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_every_change_gives_another_digest(change: str) -> None:
    base = mixed_frame()
    changed = CHANGES[change](base)
    assert digest_frame(changed) != digest_frame(base)
    assert digest_frame(base) == digest_frame(mixed_frame())  # the change did not touch base


def test_one_cell_in_a_large_frame_changes_the_digest() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.standard_normal(500_000), "b": rng.integers(0, 9, 500_000)})
    before = digest_frame(df)
    for row in (0, 250_000, 499_999):  # first, middle and last chunk of the column
        changed = df.copy()
        changed.iloc[row, 0] = np.nextafter(changed.iloc[row, 0], np.inf)  # type: ignore[index, arg-type]
        assert digest_frame(changed) != before


def _nan_payloads(values: np.ndarray) -> np.ndarray:
    """Same values, but every NaN with another bit pattern (negative sign, payload bits)."""
    bits = values.view(np.uint64).copy()
    nan = np.isnan(values)
    bits[nan] = np.where(np.arange(nan.sum()) % 2 == 0, 0xFFF8000000000001, 0x7FF4000000000ABC)
    return bits.view(np.float64)


def _chunked_strings(values: list[str | None], dtype: str) -> pd.Series:
    arr = pa.chunked_array([pa.array(values[:2], pa.large_string()), pa.array(values[2:], pa.large_string())])
    return pd.Series(pd.array(arr, dtype=dtype))


def _garbage_null_string() -> pd.Series:
    # A null slot that spans bytes ("zz"): legal Arrow, must hash like a clean null.
    data = pa.py_buffer(b"azzb")
    offsets = pa.py_buffer(np.array([0, 1, 3, 4], dtype=np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    arr = pa.StringArray.from_buffers(3, offsets, data, validity, null_count=1)
    return pd.Series(pd.array(pa.chunked_array([arr]), dtype="string"))


SAME: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
    "copy": (mixed_frame, lambda: mixed_frame().copy(deep=True)),
    "NaN payloads f64": (
        lambda: pd.DataFrame({"x": [1.0, np.nan, 2.0, np.nan]}),
        lambda: pd.DataFrame({"x": _nan_payloads(np.array([1.0, np.nan, 2.0, np.nan]))}),
    ),
    "NaN payloads f32": (
        lambda: pd.DataFrame({"x": np.array([np.nan, 1.0], dtype=np.float32)}),
        lambda: pd.DataFrame({"x": np.array([0xFFC00001, 0x3F800000], dtype=np.uint32).view(np.float32)}),
    ),
    "NaN payloads in a large column": (
        lambda: pd.DataFrame({"x": np.where(np.arange(400_000) % 997 == 0, np.nan, np.arange(400_000.0))}),
        lambda: pd.DataFrame(
            {"x": _nan_payloads(np.where(np.arange(400_000) % 997 == 0, np.nan, np.arange(400_000.0)))}
        ),
    ),
    "RangeIndex vs int64 Index": (
        lambda: pd.DataFrame({"x": [1, 2, 3]}),
        lambda: pd.DataFrame({"x": [1, 2, 3]}, index=pd.Index([0, 1, 2], dtype="int64")),
    ),
    "RangeIndex with step": (
        lambda: pd.DataFrame({"x": [1, 2, 3]}, index=pd.RangeIndex(10, 40, 10)),
        lambda: pd.DataFrame({"x": [1, 2, 3]}, index=pd.Index([10, 20, 30])),
    ),
    "chunked vs contiguous strings": (
        lambda: pd.Series(["a", "bb", None, "d"], dtype="string"),
        lambda: _chunked_strings(["a", "bb", None, "d"], "string"),
    ),
    "sliced strings": (
        lambda: pd.Series(["bb", None, "d"], dtype="str"),
        lambda: pd.Series(["a", "bb", None, "d"], dtype="str").iloc[1:].reset_index(drop=True),
    ),
    "string storage python vs pyarrow": (
        lambda: pd.Series(["a", None, "c"], dtype=pd.StringDtype("python")),
        lambda: pd.Series(["a", None, "c"], dtype=pd.StringDtype("pyarrow")),
    ),
    "null string slot spanning bytes": (
        lambda: pd.Series(["a", None, "b"], dtype="string"),
        _garbage_null_string,
    ),
    "masked slot with leftover data": (
        lambda: pd.Series(pd.array([1.0, None], dtype="Float64")),
        lambda: pd.Series(pd.arrays.FloatingArray(np.array([1.0, 123.0]), np.array([False, True]))),
    ),
    "non-contiguous columns": (
        lambda: pd.DataFrame(np.arange(12.0).reshape(4, 3)),
        lambda: pd.DataFrame(np.asfortranarray(np.arange(12.0).reshape(4, 3)), copy=False),
    ),
    "big-endian array": (
        lambda: np.array([1.0, np.nan, 3.0]),
        lambda: np.array([1.0, np.nan, 3.0], dtype=">f8"),
    ),
    "strided array": (
        lambda: np.arange(10.0)[::2].copy(),
        lambda: np.arange(10.0)[::2],
    ),
}


@pytest.mark.parametrize("case", list(SAME), ids=list(SAME))
def test_equal_data_built_differently_gives_the_same_digest(case: str) -> None:
    make_a, make_b = SAME[case]
    assert digest_object(make_a()) == digest_object(make_b())


def test_series_and_array_digests_see_shape_dtype_and_name(cancer: pd.DataFrame) -> None:
    x = cancer.drop(columns="target").to_numpy()
    assert digest_array(x) != digest_array(x.reshape(-1))
    assert digest_array(x) != digest_array(x.reshape(x.shape[1], -1))
    assert digest_array(x) != digest_array(x.astype(np.float32))
    assert digest_array(x) != digest_array(np.asfortranarray(x).T)
    assert digest_array(x) == digest_array(x.copy())
    y = cancer["target"]
    assert digest_series(y) != digest_series(y.rename("label"))
    assert digest_series(y) != digest_series(y.astype("int32"))
    assert digest_series(y) != digest_frame(y.to_frame())
    assert digest_object(y) == digest_series(y)
    objs = np.array([1, "a", None, 2.5], dtype=object)
    assert digest_array(objs) != digest_array(np.array([1, "a", np.nan, 2.5], dtype=object))
    assert digest_array(np.array(["a", "b"])) != digest_array(np.array(["a", "c"]))


def test_categorical_digest_independent_of_code_dtype_growth() -> None:
    # 200 categories need int16 codes; equal content built two ways must agree.
    cats = [f"c{i:03d}" for i in range(200)]
    a = pd.Series(pd.Categorical(["c001", "c199"], categories=cats))
    b = pd.Series(pd.Categorical.from_codes([1, 199], categories=cats))  # type: ignore[call-overload]
    assert digest_series(a) == digest_series(b)


def test_unreproducible_object_values_are_refused() -> None:
    df = pd.DataFrame({"o": [object(), object()]})
    with pytest.raises(DataError, match="memory address"):
        digest_frame(df)


def test_other_pandas_dtypes_are_digested_deterministically() -> None:
    def frame(last: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "arrow_int": pd.array([1, None, last], dtype="int64[pyarrow]"),
                "arrow_ts": pd.array(  # type: ignore[call-overload]
                    pd.to_datetime(["2024-01-01", None, "2024-01-03"]),  # type: ignore[arg-type]
                    dtype="timestamp[us][pyarrow]",
                ),
                "sparse": pd.arrays.SparseArray([0.0, 0.0, float(last)]),
                "period": pd.period_range("2024-01", periods=3, freq="M"),
                "interval": pd.interval_range(0, 3),
                "complex": np.array([1 + 2j, np.nan + 0j, last * 1j]),
                "dates": pd.Series(
                    [pd.Timestamp("2024-01-01").date(), None, pd.Timestamp("2024-01-02").date()]
                ),
            }
        )

    assert digest_frame(frame(3)) == digest_frame(frame(3))
    assert digest_frame(frame(3)) != digest_frame(frame(4))


# --------------------------------------------------------------------------- files and directories


def test_file_digest_is_xxh3_128_of_the_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read chunks
    f = tmp_path / "blob.bin"
    f.write_bytes(data)
    assert digest_file(f) == "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()
    assert digest_object(str(f)) == digest_file(f)
    f.write_bytes(data[:-1] + b"\x00")
    assert digest_file(f) != "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()


def test_directory_digest_covers_paths_and_contents(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    (root / "a.csv").write_text("x\n1\n")
    (root / "sub" / "b.csv").write_text("x\n2\n")
    first, n_files, n_bytes = directory_digest(root)
    assert (n_files, n_bytes) == (2, 8)
    assert digest_directory(root) == first == digest_object(root)

    # Same tree written in another order, elsewhere: same digest.
    other = tmp_path / "copy"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "b.csv").write_text("x\n2\n")
    (other / "a.csv").write_text("x\n1\n")
    assert digest_directory(other) == first

    (root / "sub" / "b.csv").write_text("x\n3\n")
    assert digest_directory(root) != first
    (root / "sub" / "b.csv").write_text("x\n2\n")
    assert digest_directory(root) == first
    (root / "sub" / "b.csv").rename(root / "sub" / "c.csv")
    assert digest_directory(root) != first
    (root / "sub" / "c.csv").rename(root / "sub" / "b.csv")
    (root / "empty.txt").write_text("")
    assert digest_directory(root) != first


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: digest_file(p / "missing.csv"), "no such file"),
        (lambda p: digest_directory(p / "missing"), "no such directory"),
        (lambda p: digest_file(p), "not a regular file"),
        (lambda p: digest_object([1, 2, 3]), r"(?s)type builtins\.list.*DataFrame"),
        (lambda p: digest_object({"a": 1}), r"type builtins\.dict"),
        (lambda p: digest_frame(pd.Series([1])), "expects a pandas DataFrame"),  # type: ignore[arg-type]
    ],
    ids=["missing file", "missing dir", "dir as file", "list", "dict", "series to frame"],
)
def test_digest_errors_say_what_and_how(tmp_path: Path, call: Callable[[Path], object], match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        call(tmp_path)
    assert "fix:" in str(err.value) or "expects" in str(err.value)
