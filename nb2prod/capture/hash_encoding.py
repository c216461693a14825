"""Byte encodings the data digests hash (the spec is :mod:`nb2prod.capture.hashing`'s docstring).

Primitives (``H``, ``u64``, ``str``), fixed-width value streams with
canonical NaNs (``v``), the tagged value encoding ``VAL`` and the ``ARRAY``
digest, which ``VAL`` uses for arrays inside object columns.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import xxhash

from nb2prod.exceptions import DataError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "ALGORITHM",
    "array_digest",
    "as_buffer",
    "fixed_digest",
    "fmt_digest",
    "h128",
    "lstr",
    "objects_digest",
    "range_digest",
    "u64",
    "value_bytes",
]

ALGORITHM = "xxh3_128"

_CHUNK_BYTES = 1 << 19  # half the L2 cache: the hash loads a chunk, the NaN check reads it from cache
_CANON_NAN = {2: (np.uint16, 0x7E00), 4: (np.uint32, 0x7FC00000), 8: (np.uint64, 0x7FF8000000000000)}
_CANON_NAN_F64 = struct.pack("<Q", 0x7FF8000000000000)
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")


def fmt_digest(h: xxhash.xxh3_128) -> str:
    """Return ``"xxh3_128:<32 hex>"`` of a hasher's state."""
    return f"{ALGORITHM}:{h.hexdigest()}"


def u64(n: int) -> bytes:
    """Return ``u64(n)``: 8 bytes, little-endian."""
    return struct.pack("<Q", n)


def lstr(s: str) -> bytes:
    """Return ``str(s)`` of the scheme: u32 byte length, then the UTF-8 bytes."""
    b = s.encode("utf-8", "surrogatepass")
    return struct.pack("<I", len(b)) + b


def h128(data: Any) -> bytes:
    """Return ``H(data)``: the 16-byte XXH3-128 digest, canonical order."""
    return xxhash.xxh3_128(data).digest()


def as_buffer(a: np.ndarray) -> ReadableBuffer:
    """Return ``a`` itself, typed as the buffer it is (numpy's stubs do not say so)."""
    return cast("ReadableBuffer", a)


# --------------------------------------------------------------------------- value streams


def _as_le(a: np.ndarray) -> np.ndarray:
    if a.dtype.byteorder == ">":
        return a.astype(a.dtype.newbyteorder("<"))
    return a


def _update_fixed(h: xxhash.xxh3_128, a: np.ndarray) -> xxhash.xxh3_128:
    """Feed a 1-D fixed-width array to ``h``, little-endian, NaNs canonical; return the hasher to go on with."""
    if a.dtype.kind == "c":
        a = np.ascontiguousarray(a)
        a = a.view(a.real.dtype)
    elif a.dtype.kind in "mM":
        a = a.view(np.int64)
    if a.dtype.byteorder == ">" or not a.flags.c_contiguous:
        a = np.ascontiguousarray(_as_le(a))
    if a.dtype.kind != "f":
        h.update(as_buffer(a))
        return h
    uint, canon = _CANON_NAN[a.dtype.itemsize]
    step = max(_CHUNK_BYTES // a.dtype.itemsize, 1)
    reduce_max = np.maximum.reduce
    for start in range(0, a.shape[0], step):
        chunk = a[start : start + step]
        # Hash first (streams from memory), then check the chunk while it is still cached.
        saved = h.copy()
        h.update(as_buffer(chunk))
        top = reduce_max(chunk)
        if top != top:  # max propagates NaN: some value in this chunk is NaN
            nan = np.isnan(chunk)
            # Every NaN canonical (np.nan is) iff as many values have the canonical bits as are NaN.
            if np.count_nonzero(nan) != np.count_nonzero(chunk.view(uint) == canon):
                fixed = chunk.copy()
                fixed.view(uint)[nan] = canon
                h = saved
                h.update(as_buffer(fixed))
    return h


def fixed_digest(a: np.ndarray) -> bytes:
    """Return ``H`` of a 1-D fixed-width array's ``v`` stream (little-endian, NaNs canonical)."""
    return _update_fixed(xxhash.xxh3_128(), a).digest()


def range_digest(start: int, step: int, n: int) -> bytes:
    """Digest of ``np.arange(start, start + n * step, step, dtype=int64)``, in cache-sized pieces."""
    h = xxhash.xxh3_128()
    piece = 1 << 16
    offsets = np.arange(piece, dtype=np.int64) * step
    buf = np.empty(piece, dtype=np.int64)
    for i in range(0, n, piece):
        m = min(piece, n - i)
        np.add(offsets[:m], start + i * step, out=buf[:m])
        h.update(as_buffer(buf[:m]))
    return h.digest()


# --------------------------------------------------------------------------- tagged values


def _encode_value(x: Any, out: bytearray) -> None:
    """Append ``VAL(x)`` (see module docstring) to ``out``."""
    import pandas as pd

    if x is None:
        out += b"N"
    elif x is pd.NA:
        out += b"A"
    elif x is pd.NaT:
        out += b"T"
    elif isinstance(x, (bool, np.bool_)):
        out += b"?\x01" if x else b"?\x00"
    elif isinstance(x, (int, np.integer)):
        out += b"i" + lstr(str(int(x)))
    elif isinstance(x, (float, np.floating)):
        out += b"f" + _f64(float(x))
    elif isinstance(x, (complex, np.complexfloating)):
        c = complex(x)
        out += b"j" + _f64(c.real) + _f64(c.imag)
    elif isinstance(x, str):
        out += b"s" + lstr(x)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        b = bytes(x)
        out += b"b" + u64(len(b)) + b
    elif isinstance(x, decimal.Decimal):
        out += b"D" + lstr(str(x))
    elif isinstance(x, _dt.datetime):
        out += b"d" + lstr(x.isoformat()) + lstr(str(x.tzinfo) if x.tzinfo is not None else "")
    elif isinstance(x, _dt.date):
        out += b"a" + lstr(x.isoformat())
    elif isinstance(x, _dt.time):
        out += b"h" + lstr(x.isoformat())
    elif isinstance(x, (_dt.timedelta, np.timedelta64)):
        td = pd.Timedelta(x)
        out += b"T" if td is pd.NaT else b"e" + lstr(str(td.value))  # type: ignore[comparison-overlap]
    elif isinstance(x, np.datetime64):
        _encode_value(pd.Timestamp(x), out)
    elif isinstance(x, pd.Interval):
        out += b"I"
        _encode_value(x.left, out)
        _encode_value(x.right, out)
        out += lstr(x.closed)
    elif isinstance(x, pd.Period):
        out += b"P" + lstr(str(x)) + lstr(x.freqstr)
    elif isinstance(x, tuple):
        out += b"(" + u64(len(x))
        for item in x:
            _encode_value(item, out)
    elif isinstance(x, list):
        out += b"[" + u64(len(x))
        for item in x:
            _encode_value(item, out)
    elif isinstance(x, dict):
        out += b"{" + u64(len(x))
        for k, v in x.items():
            _encode_value(k, out)
            _encode_value(v, out)
    elif isinstance(x, (set, frozenset)):
        items = []
        for item in x:
            buf = bytearray()
            _encode_value(item, buf)
            items.append(bytes(buf))
        out += b"S" + u64(len(items)) + b"".join(sorted(items))
    elif isinstance(x, np.ndarray):
        out += b"n" + array_digest(x)
    else:
        text = repr(x)
        kind = f"{type(x).__module__}.{type(x).__qualname__}"
        if _ADDRESS.search(text):
            raise DataError(
                f"cannot digest a value of type {kind}: its repr holds a memory address, "
                "so the digest would change in every process",
                hint="convert the column to str, numbers or datetimes before capturing it",
            )
        out += b"r" + lstr(kind) + lstr(text)


def _f64(v: float) -> bytes:
    return _CANON_NAN_F64 if v != v else struct.pack("<d", v)


def value_bytes(x: Any) -> bytes:
    """Return ``VAL(x)``."""
    out = bytearray()
    _encode_value(x, out)
    return bytes(out)


def objects_digest(values: Iterable[Any]) -> bytes:
    """Return ``H(VAL(v_1) + VAL(v_2) + ...)``, streamed in chunks."""
    h = xxhash.xxh3_128()
    out = bytearray()
    for v in values:
        _encode_value(v, out)
        if len(out) >= _CHUNK_BYTES:
            h.update(out)
            out.clear()
    h.update(out)
    return h.digest()


def array_digest(a: np.ndarray) -> bytes:
    """Return the 16-byte ``ARRAY`` digest of a numpy array."""
    if a.dtype.fields is not None or a.dtype.kind == "V":
        dtype_name = str(a.dtype.descr)
    else:
        dtype_name = a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str
    h = xxhash.xxh3_128(b"nb2prod-array-v1\0")
    h.update(lstr(dtype_name) + u64(a.ndim) + b"".join(u64(d) for d in a.shape))
    flat = np.ascontiguousarray(a).reshape(-1)  # no copy when already C-contiguous
    if a.dtype.kind == "O":
        h.update(objects_digest(flat))  # the 16 bytes stand in for the VAL stream
    elif a.dtype.kind in "US":
        h.update(objects_digest(flat.astype(object)))
    elif a.dtype.kind == "V":
        h.update(as_buffer(flat.view(np.uint8)))
    else:
        h = _update_fixed(h, flat)
    return h.digest()
