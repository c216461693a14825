"""Dataset records: digest, shape, schema and profile of what a notebook trains on.

:func:`describe` records an in-memory DataFrame, Series or array;
:func:`describe_path` a file or directory (the digest is of the bytes, the
schema and profile of the loaded table). The digests come from
:mod:`nb2prod.capture.hashing`, the schema and profile (and their conventions)
from :mod:`nb2prod.capture.profile`. A record has a JSON-safe ``to_dict()`` /
``from_dict()`` round trip.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nb2prod.capture.hashing import (
    digest_array,
    digest_file,
    digest_frame,
    digest_series,
    directory_digest,
)
from nb2prod.capture.profile import (
    ColumnProfile,
    ColumnSchema,
    column_name,
    profile_frame,
    summarize,
)
from nb2prod.exceptions import DataError

# Re-exported from nb2prod.capture.profile: ColumnProfile and ColumnSchema (record fields),
# profile_frame and summarize (callers import them from here today).
__all__ = [
    "ROLES",
    "ColumnProfile",
    "ColumnSchema",
    "DatasetRecord",
    "describe",
    "describe_path",
    "profile_frame",
    "summarize",
]

FORMAT = "nb2prod-dataset-v1"
ROLES = ("train", "test", "reference", "other")

_FILE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".feather": "feather",
    ".arrow": "feather",
    ".ipc": "feather",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")


@dataclass(frozen=True)
class DatasetRecord:
    """What nb2prod records about one dataset.

    Attributes:
        name: The dataset's name (the notebook variable or file name).
        role: One of ``ROLES``.
        source: ``"dataframe"``, ``"series"``, ``"array"``, ``"file"`` or ``"directory"``.
        digest: ``"xxh3_128:<hex>"`` of the full content (of the bytes for files and directories).
        n_rows: Rows (None when the data was not loaded).
        n_cols: Columns (for arrays of more than 2 dimensions, the product of the trailing ones).
        n_bytes: In-memory size of the loaded data (None when not loaded).
        schema: One :class:`ColumnSchema` per column (None when not tabular).
        profile: Column name -> :class:`ColumnProfile` (None when not tabular).
        target: The target column, if one was named.
        path: Absolute path, for files and directories.
        n_files: Files covered by the digest (files and directories).
        disk_bytes: Bytes on disk covered by the digest (files and directories).
    """

    name: str
    role: str
    source: str
    digest: str
    n_rows: int | None
    n_cols: int | None
    n_bytes: int | None
    schema: tuple[ColumnSchema, ...] | None
    profile: dict[str, ColumnProfile] | None
    target: str | None = None
    path: str | None = None
    n_files: int | None = None
    disk_bytes: int | None = None
    format: str = field(default=FORMAT, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (``json.dumps(..., allow_nan=False)`` accepts it)."""
        return {
            "format": self.format,
            "name": self.name,
            "role": self.role,
            "source": self.source,
            "digest": self.digest,
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "n_bytes": self.n_bytes,
            "schema": None if self.schema is None else [c.to_dict() for c in self.schema],
            "profile": None if self.profile is None else {k: p.to_dict() for k, p in self.profile.items()},
            "target": self.target,
            "path": self.path,
            "n_files": self.n_files,
            "disk_bytes": self.disk_bytes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetRecord:
        """Rebuild from :meth:`to_dict` output."""
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise DataError(f"unknown dataset record format {fmt!r}", hint=f"this nb2prod reads {FORMAT!r}")
        schema = d.get("schema")
        profile = d.get("profile")
        return cls(
            name=d["name"],
            role=d["role"],
            source=d["source"],
            digest=d["digest"],
            n_rows=d.get("n_rows"),
            n_cols=d.get("n_cols"),
            n_bytes=d.get("n_bytes"),
            schema=None if schema is None else tuple(ColumnSchema.from_dict(c) for c in schema),
            profile=None if profile is None else {k: ColumnProfile.from_dict(p) for k, p in profile.items()},
            target=d.get("target"),
            path=d.get("path"),
            n_files=d.get("n_files"),
            disk_bytes=d.get("disk_bytes"),
        )


# --------------------------------------------------------------------------- describe


def _check_role(role: str) -> None:
    if role not in ROLES:
        near = difflib.get_close_matches(str(role), ROLES, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise DataError(f"unknown dataset role {role!r}", hint=f"{hint}use one of: {', '.join(ROLES)}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise DataError(
            f"a dataset needs a non-empty name, got {name!r}", hint="pass name='train' (or similar)"
        )


def _check_frame(df: pd.DataFrame, name: str, target: str | None) -> None:
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(
            f"dataset {name!r} is empty ({df.shape[0]} rows x {df.shape[1]} columns)",
            hint="capture the data after it is loaded, or check the filter that emptied it",
        )
    names = [column_name(c) for c in df.columns]
    if len(set(names)) != len(names):
        dupes = sorted({c for c in names if names.count(c) > 1})
        raise DataError(
            f"dataset {name!r} has duplicate column names: {', '.join(dupes[:10])}",
            hint="rename them (df.columns = [...]) so each column has its own name",
        )
    if target is not None and target not in names:
        near = difflib.get_close_matches(str(target), names, n=1)
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise DataError(
            f"target column {target!r} is not in dataset {name!r}",
            hint=f"{hint}columns are: {shown}",
        )


def _from_frame(
    df: pd.DataFrame,
    *,
    name: str,
    role: str,
    target: str | None,
    source: str,
    digest: str,
    n_bytes: int | None = None,
    path: str | None = None,
    n_files: int | None = None,
    disk_bytes: int | None = None,
) -> DatasetRecord:
    schema, profile = summarize(df)
    return DatasetRecord(
        name=name,
        role=role,
        source=source,
        digest=digest,
        n_rows=int(df.shape[0]),
        n_cols=int(df.shape[1]),
        n_bytes=int(df.memory_usage(index=True, deep=True).sum()) if n_bytes is None else n_bytes,
        schema=schema,
        profile=profile,
        target=target,
        path=path,
        n_files=n_files,
        disk_bytes=disk_bytes,
    )


def describe(
    obj: pd.DataFrame | pd.Series | np.ndarray,
    *,
    name: str,
    role: str = "train",
    target: str | None = None,
) -> DatasetRecord:
    """Record an in-memory dataset: digest, shape, schema and profile.

    Args:
        obj: A DataFrame, Series or numpy array. A 1-D or 2-D array is profiled as
            columns ``f0..fN``; its digest is of the array itself. An array of more
            dimensions gets a digest and shape but no schema or profile.
        name: The dataset's name.
        role: One of ``ROLES``.
        target: The target column's name, which must exist.

    Returns:
        The :class:`DatasetRecord`.

    Raises:
        DataError: Unknown role, unsupported type, empty data or missing target column.
    """
    _check_role(role)
    _check_name(name)
    if isinstance(obj, pd.DataFrame):
        _check_frame(obj, name, target)
        return _from_frame(
            obj, name=name, role=role, target=target, source="dataframe", digest=digest_frame(obj)
        )
    if isinstance(obj, pd.Series):
        col = column_name(obj.name) if obj.name is not None else "value"
        frame = obj.to_frame(name=col)
        _check_frame(frame, name, target)
        n_bytes = int(obj.memory_usage(index=True, deep=True))
        return _from_frame(
            frame,
            name=name,
            role=role,
            target=target,
            source="series",
            digest=digest_series(obj),
            n_bytes=n_bytes,
        )
    if isinstance(obj, np.ndarray):
        if obj.ndim == 0 or obj.size == 0:
            raise DataError(
                f"dataset {name!r} is an empty array (shape {obj.shape})",
                hint="capture an array with at least one row and one column",
            )
        if obj.ndim > 2:
            if target is not None:
                raise DataError(
                    f"target {target!r} cannot name a column of a {obj.ndim}-D array",
                    hint="pass target=None, or describe a 2-D array or a DataFrame",
                )
            return DatasetRecord(
                name=name,
                role=role,
                source="array",
                digest=digest_array(obj),
                n_rows=int(obj.shape[0]),
                n_cols=int(np.prod(obj.shape[1:])),
                n_bytes=int(obj.nbytes),
                schema=None,
                profile=None,
            )
        two_d = obj.reshape(-1, 1) if obj.ndim == 1 else obj
        frame = pd.DataFrame(two_d, columns=[f"f{i}" for i in range(two_d.shape[1])], copy=False)
        _check_frame(frame, name, target)
        return _from_frame(
            frame,
            name=name,
            role=role,
            target=target,
            source="array",
            digest=digest_array(obj),
            n_bytes=int(obj.nbytes),
        )
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    raise DataError(
        f"cannot describe dataset {name!r} of type {kind}",
        hint="pass a pandas DataFrame, Series or numpy array (convert others with .to_pandas() "
        "or pandas.DataFrame(...)), or use describe_path() for a file or directory",
    )


def _file_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return _FILE_FORMATS.get(suffixes[-1]) if suffixes else None


def _read_file(path: Path, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t")
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "feather":
            return pd.read_feather(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True)
        try:
            return pd.read_json(path, lines=True)
        except ValueError:
            return pd.read_json(path)
    except Exception as e:
        raise DataError(
            f"cannot read {path} as {fmt}: {type(e).__name__}: {e}",
            hint=f"check that the file is valid {fmt}, or load it yourself and pass the DataFrame to describe()",
        ) from e


def _is_parquet_dataset(root: Path) -> bool:
    seen = False
    for _dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        for fn in filenames:
            if fn.startswith((".", "_")):  # _SUCCESS, _metadata, .crc files
                continue
            if not fn.lower().endswith((".parquet", ".pq")):
                return False
            seen = True
    return seen


def describe_path(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    role: str = "train",
    target: str | None = None,
) -> DatasetRecord:
    """Record a dataset on disk: the digest is of the bytes, the profile of the loaded table.

    CSV/TSV, Parquet, Feather/Arrow IPC and JSON Lines files (optionally
    compressed) and Parquet dataset directories are loaded for schema and
    profile. Any other file or directory gets a digest, file count and size,
    with no schema or profile.

    Args:
        path: A file or directory.
        name: The dataset's name; default the file or directory name.
        role: One of ``ROLES``.
        target: The target column's name, which must exist.

    Returns:
        The :class:`DatasetRecord`.

    Raises:
        DataError: Unknown role, missing or unreadable path, empty table or missing target column.
    """
    _check_role(role)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"no such file or directory: {p}", hint="check the path (relative paths start at the cwd)"
        )
    p = p.resolve()
    name = p.name if name is None else name
    _check_name(name)
    if p.is_dir():
        digest, n_files, disk_bytes = directory_digest(p)
        frame = None
        if _is_parquet_dataset(p):
            frame = _read_file(p, "parquet")
    elif p.is_file():
        digest, n_files, disk_bytes = digest_file(p), 1, p.stat().st_size
        fmt = _file_format(p)
        frame = _read_file(p, fmt) if fmt else None
    else:
        raise DataError(
            f"{p} is neither a regular file nor a directory", hint="pass a data file or a directory"
        )
    source = "directory" if p.is_dir() else "file"
    if frame is None:
        if target is not None:
            raise DataError(
                f"target {target!r} needs a table, but {p} is not a format nb2prod loads",
                hint="use CSV, Parquet, Feather or JSON Lines, or pass target=None",
            )
        return DatasetRecord(
            name=name,
            role=role,
            source=source,
            digest=digest,
            n_rows=None,
            n_cols=None,
            n_bytes=None,
            schema=None,
            profile=None,
            path=str(p),
            n_files=n_files,
            disk_bytes=disk_bytes,
        )
    _check_frame(frame, name, target)
    return _from_frame(
        frame,
        name=name,
        role=role,
        target=target,
        source=source,
        digest=digest,
        path=str(p),
        n_files=n_files,
        disk_bytes=disk_bytes,
    )
