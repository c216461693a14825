"""Dataset records: in-memory data and files on disk, their JSON round trip and their errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nb2prod.capture.data import DatasetRecord, describe, describe_path
from nb2prod.capture.hashing import digest_array, digest_directory, digest_file, digest_series
from nb2prod.capture.profile import ColumnProfile, ColumnSchema
from nb2prod.exceptions import DataError


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
        (lambda p: describe([1, 2], name="d"), r"(?s)type builtins\.list.*describe_path"),  # type: ignore[arg-type]
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
