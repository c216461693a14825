"""Content digests of data: frames, series, arrays, files, directories.

Every digest is a string ``"xxh3_128:" + 32 lowercase hex digits``: the
XXH3 128-bit hash (xxHash 0.8, seed 0) in its canonical big-endian form, as
``xxhash.xxh3_128(...).hexdigest()`` and ``xxhsum -H2`` print it. Nothing
depends on the process: no Python ``hash()``, no memory address, no pickle.

Scheme ``nb2prod-frame-v1`` (and its siblings named below). Notation:
``H(b)`` is the 16-byte XXH3-128 digest of bytes ``b`` (canonical order);
``u8``/``u32``/``u64`` are little-endian unsigned integers; ``str(s)`` is
``u32(len(utf8)) + utf8`` where utf8 is ``s.encode("utf-8", "surrogatepass")``;
``+`` concatenates. All fixed-width numbers inside value streams are
little-endian.

Column digest (a Series' values, one index level, or a list of categories)::

    COL(c) = H(b"nb2prod-col-v1\\0" + str(dtype_name) + u64(n) + u8(k)
               + tag_1 + D_1 + ... + tag_k + D_k)

where ``n`` is the number of values and the ``k`` parts are, in order
(``tag`` is one ASCII byte, ``D`` a 16-byte digest):

* ``m`` validity: present only if at least one value is missing. One byte
  per value, 1 = present, 0 = missing. ``D = H(bytes)``.
* ``v`` fixed-width values, one per row, ``D = H(bytes)``. Missing slots are
  zero, so they never depend on leftover memory. Floats (and both halves of
  complex numbers) keep their bits, -0.0 included, except that every NaN is
  written as the quiet NaN ``0x7E00`` (f16), ``0x7FC00000`` (f32),
  ``0x7FF8000000000000`` (f64). bool is one byte 0/1. datetime64,
  timedelta64 and tz-aware datetimes are their int64 counts in the unit of
  the dtype (UTC for tz-aware; NaT is ``-2**63``); periods are int64
  ordinals. Other widths are the native width of the dtype.
* ``l`` string lengths: int64 UTF-8 byte length per value (0 when missing),
  ``D = H(bytes)``; then ``d`` string data: the UTF-8 bytes of the present
  values, concatenated, ``D = H(bytes)``.
* ``c`` categorical codes (``D = H(bytes)``, width named in the dtype name,
  -1 = missing), then ``k`` categories, whose ``D`` is ``COL(categories)``.
* ``o`` any other values: ``D = H(VAL(v_1) + ... + VAL(v_n))``.

Which parts and which ``dtype_name`` by pandas dtype:

* numpy int/uint/bool/float/complex/datetime64/timedelta64: ``str(dtype)``;
  ``v``. Structured dtypes: ``str(dtype.descr)``; ``v`` raw bytes.
* tz-aware datetime (``datetime64[ns, Europe/Paris]``), period: ``str(dtype)``;
  ``v``.
* nullable Int*/UInt*/Float*/boolean: ``str(dtype)``; ``m`` (if any NA), ``v``.
  A NaN that is not NA (possible in Float64) is a value, not a missing slot.
* ``str``/``string`` (either storage) and Arrow string types: ``str(dtype)``;
  ``m`` (if any missing), ``l``, ``d``.
* categorical: ``"category(ordered=True|False,codes=int8|int16|int32|int64)"``;
  ``m`` (if any missing), ``c``, ``k``. Category order and the ordered flag
  change the digest; unused categories count.
* object: if every value is a ``str`` or ``None`` (and at least one is a
  ``str``), ``m`` (if any None), ``l``, ``d``; otherwise ``o``.
  ``dtype_name`` is ``"object"`` either way. (NaN or NA among strings: ``o``.)
* Arrow integer/float/bool/temporal: ``str(dtype)``; ``m`` (if any null),
  ``v`` (temporal as their integer storage).
* Sparse: ``str(dtype)``; the parts of its dense values.
* anything else (interval, other extension types): ``str(dtype)``; ``o`` of
  ``numpy.asarray(values, dtype=object)``.

Value encoding ``VAL(x)`` (object values and labels), tag byte then payload:
``N`` None; ``A`` pandas.NA; ``T`` pandas.NaT; ``?`` + u8 bool (numpy too);
``i`` + str(decimal text) for int and numpy integers; ``f`` + 8-byte f64
(canonical NaN) for float and numpy floats; ``j`` + two f64 for complex;
``s`` + str for str; ``b`` + u64(len) + bytes for bytes/bytearray;
``D`` + str(text) for Decimal; ``d`` + str(isoformat) + str(tz name or "")
for datetime/Timestamp; ``a`` + str(isoformat) for date; ``h`` + str(isoformat)
for time; ``e`` + str(decimal nanoseconds) for timedelta/Timedelta/numpy timedelta64
(``T`` if NaT); numpy datetime64 as the equal Timestamp;
``I`` + VAL(left) + VAL(right) + str(closed) for Interval; ``P`` + str(text) +
str(freqstr) for Period; ``(`` tuple, ``[`` list: u64(len) + items; ``{`` dict: u64(len)
+ key, value pairs in insertion order; ``S`` set/frozenset: u64(len) +
item encodings sorted bytewise; ``n`` + 16-byte ``ARRAY`` digest for a numpy
array; ``r`` + str(module.qualname of the type) + str(repr) for anything
else, refused (DataError) when the repr shows a memory address.

Frame and series digests (index levels are materialised: a RangeIndex and
an int64 Index with the same values are equal; a MultiIndex contributes
one column digest per level, from its level values)::

    FRAME = H(b"nb2prod-frame-v1\\0" + u64(rows) + u64(cols) + u64(levels)
              + VAL(tuple(index.names)) + VAL(tuple(columns.names))
              + COL(level_1) + ... + VAL(label_1) + COL(col_1) + ...)
    SERIES = H(b"nb2prod-series-v1\\0" + u64(n) + u64(levels) + VAL(name)
               + VAL(tuple(index.names)) + COL(level_1) + ... + COL(values))
    ARRAY = H(b"nb2prod-array-v1\\0" + str(dtype) + u64(ndim) + u64(dim)...
              + values in C order)

For ARRAY, ``dtype`` is ``dtype.str`` in little-endian form (``<f8``,
``|b1``, ``<M8[ns]``), or ``str(dtype.descr)`` for structured dtypes; the
values are encoded as in ``v`` (floats NaN-canonical), or, for object and
numpy str/bytes arrays, replaced by the 16 bytes ``H(VAL(x_1) + VAL(x_2) ...)``.

A file digest is ``H(file bytes)`` (check it with ``xxhsum -H2``). A
directory digest covers the regular files below it (symlinks to files are
followed, symlinked directories are not, empty directories do not count),
sorted by their relative POSIX path's UTF-8 bytes::

    DIR = H(b"nb2prod-dir-v1\\0" + u64(files)
            + str(relpath) + u64(size) + FILE_DIGEST ... )

Speed: a float column is read once, in 512 KiB chunks; each chunk is
hashed, then checked for NaN (``np.maximum.reduce``, which propagates NaN)
while it is still in the L2 cache; only a chunk holding a NaN whose bits are
not already canonical is copied, rewritten and hashed again from the saved
hasher state. Columns are hashed on up to two threads (xxhash and
numpy release the GIL). See ``bench/RESULTS.md``.

Layout: this module holds the scheme (this docstring), the column digests
and the frame, series, array and any-object entry points; the byte encodings
(``H``, ``str``, ``v`` streams, ``VAL``, ``ARRAY``) are in
:mod:`nb2prod.capture.hash_encoding`, the file and directory digests in
:mod:`nb2prod.capture.file_digest` (re-exported here).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from nb2prod.capture.file_digest import digest_directory, digest_file, directory_digest
from nb2prod.capture.hash_encoding import (
    ALGORITHM,
    array_digest,
    as_buffer,
    fixed_digest,
    fmt_digest,
    h128,
    lstr,
    objects_digest,
    range_digest,
    u64,
    value_bytes,
)
from nb2prod.exceptions import DataError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# digest_file, digest_directory and directory_digest live in nb2prod.capture.file_digest.
__all__ = [
    "ALGORITHM",
    "SCHEME",
    "digest_array",
    "digest_directory",
    "digest_file",
    "digest_frame",
    "digest_object",
    "digest_series",
    "directory_digest",
]

SCHEME = "nb2prod-frame-v1"

_PARALLEL_MIN_BYTES = 32 << 20  # below this a thread pool costs more than it saves
_MAX_THREADS = 2

_Part = tuple[bytes, bytes]  # (tag, 16-byte digest)


# --------------------------------------------------------------------------- columns


def _mask_digest(valid_chunks: Sequence[np.ndarray]) -> bytes:
    h = xxhash.xxh3_128()
    for v in valid_chunks:
        h.update(as_buffer(np.ascontiguousarray(v, dtype=np.bool_).view(np.uint8)))
    return h.digest()


def _arrow_string_parts(arr: pa.Array | pa.ChunkedArray) -> list[_Part]:
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    if chunks and not (pa.types.is_large_string(chunks[0].type) or pa.types.is_string(chunks[0].type)):
        chunks = [c.cast(pa.large_string()) for c in chunks]
    any_null = any(c.null_count for c in chunks)
    hm, hl, hd = xxhash.xxh3_128(), xxhash.xxh3_128(), xxhash.xxh3_128()
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        offsets, data = _string_buffers(chunk)
        valid = None
        if chunk.null_count:
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            if np.diff(offsets)[~valid].any():
                # A null slot may legally span bytes; rebuild so only present values hold data.
                offsets, data = _string_buffers(pc.fill_null(chunk, ""))
        if any_null:
            hm.update(as_buffer(valid.view(np.uint8) if valid is not None else np.ones(n, np.uint8)))
        _update_lengths(hl, offsets)
        if data is not None:
            hd.update(data)
    parts: list[_Part] = []
    if any_null:
        parts.append((b"m", hm.digest()))
    parts += [(b"l", hl.digest()), (b"d", hd.digest())]
    return parts


def _update_lengths(h: xxhash.xxh3_128, offsets: np.ndarray) -> None:
    """Feed the int64 lengths ``offsets[1:] - offsets[:-1]`` to ``h``, in cache-sized pieces."""
    piece = 1 << 16
    buf = np.empty(piece, dtype=np.int64)
    n = len(offsets) - 1
    for i in range(0, n, piece):
        m = min(piece, n - i)
        np.subtract(offsets[i + 1 : i + 1 + m], offsets[i : i + m], out=buf[:m])
        h.update(as_buffer(buf[:m]))


def _string_buffers(chunk: pa.Array) -> tuple[np.ndarray, memoryview | None]:
    import pyarrow as pa

    n, off = len(chunk), chunk.offset
    bufs = chunk.buffers()
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width)[off : off + n + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = memoryview(bufs[2])[lo:hi] if bufs[2] is not None and hi > lo else None
    return offsets, data


def _object_parts(values: np.ndarray) -> list[_Part]:
    import pandas as pd
    import pyarrow as pa

    if len(values) and pd.api.types.infer_dtype(values, skipna=True) == "string":
        try:
            # from_pandas=False: only None becomes null; NaN or NA makes this fail -> tagged path.
            arr = pa.array(values, type=pa.large_string(), from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        else:
            if arr.null_count < len(arr):
                return _arrow_string_parts(arr)
    return [(b"o", objects_digest(values))]


def _arrow_parts(chunked: pa.ChunkedArray) -> list[_Part] | None:
    import pyarrow as pa

    t = chunked.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _arrow_string_parts(chunked)
    if not (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t)
    ):
        return None
    if pa.types.is_temporal(t):
        chunked = chunked.cast(pa.int64() if t.bit_width == 64 else pa.int32())
        t = chunked.type
    valid = chunked.is_valid().to_numpy(zero_copy_only=False) if chunked.null_count else None
    zero = pa.scalar(False) if pa.types.is_boolean(t) else pa.scalar(0, type=t)
    values = chunked.fill_null(zero).to_numpy()
    parts: list[_Part] = []
    if valid is not None:
        parts.append((b"m", _mask_digest([valid])))
    parts.append((b"v", fixed_digest(values)))
    return parts


def _column(values: Any) -> tuple[str, int, list[_Part]]:
    """``(dtype_name, n, parts)`` of one Series, Index or array (see module docstring)."""
    import pandas as pd

    dtype = values.dtype
    arr: Any = values.array if isinstance(values, (pd.Series, pd.Index)) else values
    n = len(arr)
    name = str(dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        codes = np.asarray(arr.codes)
        parts = [(b"m", _mask_digest([codes >= 0]))] if (codes < 0).any() else []
        parts += [(b"c", fixed_digest(codes)), (b"k", _column_digest(arr.categories))]
        return f"category(ordered={bool(dtype.ordered)},codes={codes.dtype})", n, parts
    if isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)):
        return name, n, [(b"v", fixed_digest(np.asarray(arr.asi8)))]
    if isinstance(dtype, pd.StringDtype):
        return name, n, _arrow_string_parts(arr.__arrow_array__())
    if isinstance(dtype, pd.ArrowDtype):
        arrow = _arrow_parts(arr.__arrow_array__())
        if arrow is not None:
            return name, n, arrow
    elif (
        isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and not isinstance(dtype, pd.SparseDtype)
        and hasattr(dtype, "numpy_dtype")
        and dtype.kind in ("i", "u", "f", "b")
    ):
        # Nullable Int/UInt/Float/boolean: public API, NA slots written as zero.
        mask = np.asarray(arr.isna(), dtype=np.bool_)
        data = arr.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
        parts = [(b"m", _mask_digest([~mask]))] if mask.any() else []
        parts.append((b"v", fixed_digest(data)))
        return name, n, parts
    if isinstance(dtype, pd.SparseDtype):
        _, _, parts = _column(np.asarray(arr.to_dense()))
        return name, n, parts
    if isinstance(dtype, np.dtype):
        a = arr if isinstance(arr, np.ndarray) else arr.to_numpy()
        if dtype.kind == "O":
            return name, n, _object_parts(a)
        if dtype.kind in "US":
            return name, n, _object_parts(a.astype(object))
        if dtype.kind == "V":
            return str(dtype.descr), n, [(b"v", h128(np.ascontiguousarray(a).view(np.uint8)))]
        return name, n, [(b"v", fixed_digest(a))]
    return name, n, [(b"o", objects_digest(np.asarray(arr, dtype=object)))]


def _column_digest(values: Any) -> bytes:
    dtype_name, n, parts = _column(values)
    head = b"nb2prod-col-v1\0" + lstr(dtype_name) + u64(n) + bytes([len(parts)])
    return h128(head + b"".join(tag + d for tag, d in parts))


def _level_task(index: pd.Index, level: int) -> Callable[[], bytes]:
    import pandas as pd

    if isinstance(index, pd.MultiIndex):
        return lambda: _column_digest(index.get_level_values(level))
    if isinstance(index, pd.RangeIndex):
        # Same digest as the materialised int64 values, without materialising them.
        def task() -> bytes:
            head = b"nb2prod-col-v1\0" + lstr("int64") + u64(len(index)) + b"\x01"
            return h128(head + b"v" + range_digest(index.start, index.step, len(index)))

        return task
    return lambda: _column_digest(index)


def _run(tasks: Sequence[Callable[[], bytes]], n_bytes: int, threads: int | None) -> list[bytes]:
    workers = threads if threads is not None else min(_MAX_THREADS, os.cpu_count() or 1)
    if workers <= 1 or len(tasks) <= 1 or (threads is None and n_bytes < _PARALLEL_MIN_BYTES):
        return [t() for t in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nb2prod-digest") as pool:
        return list(pool.map(lambda t: t(), tasks))


def _nbytes(obj: pd.DataFrame | pd.Series) -> int:
    usage = obj.memory_usage(index=True, deep=False)
    return int(usage.sum()) if hasattr(usage, "sum") else int(usage)


# --------------------------------------------------------------------------- public


def digest_frame(df: pd.DataFrame, *, threads: int | None = None) -> str:
    """Digest every value, the index, the column labels and the dtypes of a DataFrame.

    Args:
        df: The frame.
        threads: Worker threads; default up to 2, and 1 for frames under 32 MiB.

    Returns:
        ``"xxh3_128:<32 hex>"`` (scheme ``nb2prod-frame-v1``, see the module docstring).
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"digest_frame expects a pandas DataFrame, got {type(df).__name__}")
    levels = df.index.nlevels
    tasks = [_level_task(df.index, i) for i in range(levels)]
    tasks += [functools.partial(_column_digest, s) for _, s in df.items()]
    digests = _run(tasks, _nbytes(df), threads)
    h = xxhash.xxh3_128(SCHEME.encode() + b"\0")
    h.update(u64(len(df)) + u64(df.shape[1]) + u64(levels))
    h.update(value_bytes(tuple(df.index.names)) + value_bytes(tuple(df.columns.names)))
    for d in digests[:levels]:
        h.update(d)
    for label, d in zip(df.columns, digests[levels:], strict=True):
        h.update(value_bytes(label) + d)
    return fmt_digest(h)


def digest_series(s: pd.Series, *, threads: int | None = None) -> str:
    """Digest the values, index, name and dtype of a Series (scheme ``nb2prod-series-v1``).

    Args:
        s: The series.
        threads: Worker threads; default up to 2, and 1 under 32 MiB.

    Returns:
        ``"xxh3_128:<32 hex>"``.
    """
    import pandas as pd

    if not isinstance(s, pd.Series):
        raise DataError(f"digest_series expects a pandas Series, got {type(s).__name__}")
    levels = s.index.nlevels
    tasks = [_level_task(s.index, i) for i in range(levels)] + [lambda: _column_digest(s)]
    digests = _run(tasks, _nbytes(s), threads)
    h = xxhash.xxh3_128(b"nb2prod-series-v1\0")
    h.update(u64(len(s)) + u64(levels) + value_bytes(s.name) + value_bytes(tuple(s.index.names)))
    for d in digests:
        h.update(d)
    return fmt_digest(h)


def digest_array(a: np.ndarray) -> str:
    """Digest a numpy array: dtype, shape and every value in C order (scheme ``nb2prod-array-v1``).

    Object and string arrays are hashed value by value (``VAL``), as the
    digest of that stream. Non C-contiguous arrays are copied first.

    Args:
        a: The array.

    Returns:
        ``"xxh3_128:<32 hex>"``.
    """
    if not isinstance(a, np.ndarray):
        raise DataError(f"digest_array expects a numpy ndarray, got {type(a).__name__}")
    return f"{ALGORITHM}:{array_digest(a).hex()}"


SUPPORTED = "pandas DataFrame, pandas Series, numpy ndarray, or a path (str/Path) to a file or directory"


def digest_object(obj: Any) -> str:
    """Digest any supported object, choosing the scheme by its type.

    Args:
        obj: A DataFrame, Series, ndarray, or a path to a file or directory.

    Returns:
        ``"xxh3_128:<32 hex>"``.

    Raises:
        DataError: For any other type, or a path that does not exist.
    """
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return digest_frame(obj)
    if isinstance(obj, pd.Series):
        return digest_series(obj)
    if isinstance(obj, np.ndarray):
        return digest_array(obj)
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if p.is_dir():
            return digest_directory(p)
        return digest_file(p)
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    raise DataError(
        f"cannot digest an object of type {kind}",
        hint=f"pass a {SUPPORTED}; convert other tables with .to_pandas() or pandas.DataFrame(...)",
    )
