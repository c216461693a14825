"""Dataset digests, schema and profile: real scikit-learn data and small synthetic frames."""

from __future__ import annotations

import json
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
from sklearn.datasets import load_breast_cancer, load_iris

from nb2prod.capture.data import (
    QUANTILE_PROBS,
    ColumnProfile,
    ColumnSchema,
    DatasetRecord,
    describe,
    describe_path,
    summarize,
)
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


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame


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
    out.iloc[row, out.columns.get_loc(col)] = value
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
        out[col] = values.array if isinstance(values, pd.Series) else values  # no index alignment
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
        changed.iloc[row, 0] = np.nextafter(changed.iloc[row, 0], np.inf)
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
    b = pd.Series(pd.Categorical.from_codes([1, 199], categories=cats))
    assert digest_series(a) == digest_series(b)


def test_unreproducible_object_values_are_refused() -> None:
    df = pd.DataFrame({"o": [object(), object()]})
    with pytest.raises(DataError, match="memory address"):
        digest_frame(df)


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
        (lambda p: digest_frame(pd.Series([1])), "expects a pandas DataFrame"),
    ],
    ids=["missing file", "missing dir", "dir as file", "list", "dict", "series to frame"],
)
def test_digest_errors_say_what_and_how(tmp_path: Path, call: Callable[[Path], object], match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        call(tmp_path)
    assert "fix:" in str(err.value) or "expects" in str(err.value)


# --------------------------------------------------------------------------- schema and profile


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
    iris["species"] = pd.Categorical.from_codes(
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


def test_record_round_trips_through_json(cancer: pd.DataFrame) -> None:
    df = cancer.copy()
    df.loc[::5, "mean radius"] = np.nan
    df.loc[3, "mean texture"] = np.inf
    df["grade"] = pd.Categorical(np.where(df["target"] == 1, "benign", "malignant"))
    rec = describe(df, name="cancer", role="reference")
    text = json.dumps(rec.to_dict(), allow_nan=False)
    back = DatasetRecord.from_dict(json.loads(text))
    assert back == rec
    assert back.profile is not None and back.profile["mean texture"].n_infinite == 1
    assert back.profile["mean radius"].drift_edges is not None
    assert back.profile["mean radius"].drift_edges[0] == -np.inf
    assert ColumnSchema.from_dict(rec.schema[0].to_dict()) == rec.schema[0]  # type: ignore[index]
    assert ColumnProfile.from_dict(ColumnProfile(null_rate=1.0, count=0).to_dict()).mean is None


def test_describe_series_and_arrays(cancer: pd.DataFrame) -> None:
    y = cancer["target"]
    rec = describe(y, name="y")
    assert rec.source == "series" and rec.digest == digest_series(y)
    assert [c.name for c in rec.schema or ()] == ["target"] and rec.n_cols == 1
    assert describe(pd.Series([1.0, 2.0]), name="s").schema[0].name == "value"  # type: ignore[index]

    x = cancer.drop(columns="target").to_numpy()
    rec = describe(x, name="X", target="f3")
    assert rec.source == "array" and rec.digest == digest_array(x)
    assert (rec.n_rows, rec.n_cols, rec.n_bytes) == (569, 30, x.nbytes)
    assert [c.name for c in rec.schema or ()][:3] == ["f0", "f1", "f2"]
    assert (rec.profile or {})["f3"].mean == pytest.approx(x[:, 3].mean())
    assert describe(x[:, 0], name="x0").n_cols == 1

    images = np.zeros((4, 8, 8), dtype=np.uint8)
    rec = describe(images, name="images")
    assert (rec.n_rows, rec.n_cols, rec.schema, rec.profile) == (4, 64, None, None)


@pytest.mark.parametrize(
    ("suffix", "write"),
    [
        (".csv", lambda df, p: df.to_csv(p, index=False)),
        (".csv.gz", lambda df, p: df.to_csv(p, index=False)),
        (".parquet", lambda df, p: df.to_parquet(p, index=False)),
        (".feather", lambda df, p: df.to_feather(p)),
        (".jsonl", lambda df, p: df.to_json(p, orient="records", lines=True)),
    ],
)
def test_describe_path_files(tmp_path: Path, cancer: pd.DataFrame, suffix: str, write: Callable) -> None:
    df = cancer.iloc[:100, [0, 1, -1]]
    path = tmp_path / f"cancer{suffix}"
    write(df, path)
    rec = describe_path(path, role="test", target="target")
    assert rec.source == "file" and rec.name == path.name and rec.path == str(path.resolve())
    assert rec.digest == digest_file(path)
    assert (rec.n_rows, rec.n_cols, rec.n_files, rec.disk_bytes) == (100, 3, 1, path.stat().st_size)
    assert (rec.profile or {})["mean radius"].mean == pytest.approx(df["mean radius"].mean())


def test_describe_path_directories(tmp_path: Path, cancer: pd.DataFrame) -> None:
    ds = tmp_path / "parts"
    ds.mkdir()
    cancer.iloc[:300].to_parquet(ds / "part-0.parquet", index=False)
    cancer.iloc[300:].to_parquet(ds / "part-1.parquet", index=False)
    (ds / "_SUCCESS").write_text("")
    rec = describe_path(ds, name="cancer", target="target")
    assert rec.source == "directory" and rec.digest == digest_directory(ds)
    assert (rec.n_rows, rec.n_cols, rec.n_files) == (569, 31, 3)
    assert (rec.profile or {})["target"].mean == pytest.approx(cancer["target"].mean())

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("hello")
    (raw / "b.bin").write_bytes(b"\x00" * 10)
    rec = describe_path(raw)
    assert (rec.n_files, rec.disk_bytes, rec.schema, rec.profile, rec.n_rows) == (2, 15, None, None, None)
    assert json.dumps(rec.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda p: describe(pd.DataFrame({"a": [1]}), name="d", role="training"),
            r"(?s)unknown dataset role.*'train'",
        ),
        (
            lambda p: describe(pd.DataFrame({"a": [1]}), name="d", target="b"),
            r"(?s)target column 'b'.*columns are: a",
        ),
        (lambda p: describe(pd.DataFrame({"label": [1]}), name="d", target="lable"), r"did you mean 'label'"),
        (lambda p: describe(pd.DataFrame({"a": []}), name="d"), r"'d' is empty \(0 rows"),
        (lambda p: describe(pd.DataFrame(index=[1, 2]), name="d"), r"empty \(2 rows x 0 columns"),
        (lambda p: describe(np.zeros((0, 3)), name="d"), r"empty array"),
        (lambda p: describe([1, 2], name="d"), r"(?s)type builtins\.list.*describe_path"),
        (lambda p: describe(pd.DataFrame({"a": [1]}), name=""), r"non-empty name"),
        (
            lambda p: describe(pd.DataFrame([[1, 2]], columns=["a", "a"]), name="d"),
            r"duplicate column names: a",
        ),
        (lambda p: describe_path(p / "nope.csv"), r"no such file or directory"),
        (lambda p: describe_path(p / "bad.parquet"), r"cannot read .*bad\.parquet as parquet"),
        (lambda p: describe_path(p / "empty.csv"), r"cannot read .*empty\.csv as csv"),
        (lambda p: describe_path(p / "notes.txt", target="y"), r"target 'y' needs a table"),
    ],
    ids=[
        "role",
        "target",
        "target typo",
        "no rows",
        "no columns",
        "empty array",
        "list",
        "no name",
        "duplicate columns",
        "missing path",
        "corrupt parquet",
        "empty csv",
        "target without table",
    ],
)
def test_describe_errors_say_what_and_how(tmp_path: Path, call: Callable[[Path], object], match: str) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=match) as err:
        call(tmp_path)
    assert "\n  fix: " in str(err.value)


def test_other_pandas_dtypes_are_digested_deterministically() -> None:
    def frame(last: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "arrow_int": pd.array([1, None, last], dtype="int64[pyarrow]"),
                "arrow_ts": pd.array(
                    pd.to_datetime(["2024-01-01", None, "2024-01-03"]), dtype="timestamp[us][pyarrow]"
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
