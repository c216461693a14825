"""A batch's logged rows in the prediction store: one ``batch_chunks`` row a scored chunk.

``nb2prod score`` logs millions of rows; one store row each (JSON features, as the service
logs a request) costs ~30 us a row to encode and insert, five times the model's own cost.
A batch logs each scored chunk as one row of ``batch_chunks`` instead (see
``serving/store_schema.py``), its rows as one Arrow IPC stream (zstd-compressed buffers,
~250 bytes a row for 30 float features, against ~1.2 KB of JSON), written in ~0.25 us a row
(Parquet with zstd: ~0.5 us for the same size). This module owns that payload:

* ``row`` (int64): the row's number in the input; its request id is ``<batch id>-<row>``;
* ``f:<column>``: each feature the contract checked, in its type (float64, int64, bool,
  string; null where the input was null or, for floats, not finite, as the service logs);
* ``prediction``: the model's answer;
* ``p:<class>`` (classifiers): the probability of each class, the class as text.

Readers meet batch rows in the service's shape: :class:`LoggedRow` carries the features
as a dict and the answer as ``{"prediction": ..., "probabilities": {...}}``, what the
service writes as JSON into ``predictions``. :func:`lookup` resolves request ids (trace),
:func:`labelled` joins feedback (live quality, retraining), :func:`scan` reads chosen
columns chunk by chunk (the label-free estimate), :func:`traffic` counts rows without
reading a payload.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from nb2prod.serving.store import SQL_INSERT_BATCH_CHUNK, Store, is_sqlite_file, split_batch_request_id

__all__ = [
    "FEATURE",
    "PREDICTION",
    "PROBABILITY",
    "ROW",
    "Chunk",
    "LoggedRow",
    "answers",
    "chunk_row",
    "decode",
    "encode",
    "labelled",
    "lookup",
    "scan",
    "traffic",
]

ROW = "row"
FEATURE = "f:"
PREDICTION = "prediction"
PROBABILITY = "p:"
_COMPRESSION_LEVEL = 1  # zstd level 1: higher levels gain little on floats and cost more

Column = tuple[np.ndarray, np.ndarray, str]
"""A checked column: (values, null mask, kind) as ``serving/contract.py`` leaves it."""


@dataclass(frozen=True)
class Chunk:
    """One logged chunk of a batch (no payload): its row span, row count, time and model version."""

    batch_id: str
    first_row: int
    last_row: int
    n_rows: int
    ts: float
    version: str


@dataclass(frozen=True)
class LoggedRow:
    """A batch row as the service logs a request: features, answer, and its label when one arrived."""

    request_id: str
    ts: float
    version: str
    features: dict[str, Any] | None
    answer: dict[str, Any]
    label: str | None = None


# ----------------------------------------------------------------------------- writing


def chunk_row(
    batch_id: str,
    rows: np.ndarray,
    columns: Mapping[str, Column],
    predictions: np.ndarray,
    probabilities: Mapping[str, np.ndarray] | None,
    *,
    ts: float,
    version: str,
) -> dict[str, Any]:
    """The ``batch_chunks`` row (parameters of ``SQL_INSERT_BATCH_CHUNK``) of one scored chunk.

    Args:
        rows: The rows' numbers, ascending (rejected rows left out).
        columns: Feature -> (values, null mask, kind), the rows' checked values.
        predictions: One answer a row.
        probabilities: Class (as text) -> its probability a row (classifiers), or None.
    """
    rows = np.asarray(rows, dtype=np.int64)
    first, last = int(rows[0]), int(rows[-1])
    present = None
    if len(rows) != last - first + 1:  # rejected rows left gaps: say which rows are here
        mask = np.zeros(last - first + 1, dtype=bool)
        mask[rows - first] = True
        present = np.packbits(mask).tobytes()
    return {
        "batch_id": batch_id,
        "first_row": first,
        "last_row": last,
        "n_rows": len(rows),
        "ts": ts,
        "model_version": version,
        "present": present,
        "payload": encode(rows, columns, predictions, probabilities),
    }


def write(store: Store, chunk: Mapping[str, Any]) -> None:
    """Insert one :func:`chunk_row` (one statement, one transaction)."""
    store.write(SQL_INSERT_BATCH_CHUNK, [chunk])


def encode(
    rows: np.ndarray,
    columns: Mapping[str, Column],
    predictions: np.ndarray,
    probabilities: Mapping[str, np.ndarray] | None = None,
) -> bytes:
    """The payload (Arrow IPC stream) of a chunk (see the module docstring for its columns)."""
    import pyarrow as pa

    arrays: dict[str, Any] = {ROW: pa.array(np.asarray(rows, dtype=np.int64))}
    for name, (values, null, kind) in columns.items():
        arrays[FEATURE + name] = _feature_array(values, null, kind)
    arrays[PREDICTION] = _answer_array(predictions)
    for label, p in (probabilities or {}).items():
        arrays[PROBABILITY + str(label)] = pa.array(np.asarray(p, dtype=np.float64))
    table = pa.table(arrays)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=_COMPRESSION_LEVEL))
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _feature_array(values: np.ndarray, null: np.ndarray, kind: str) -> Any:
    import pyarrow as pa

    if kind in ("float", "int", "bool"):
        numbers = np.asarray(values, dtype={"float": np.float64, "int": np.int64, "bool": bool}[kind])
        missing = null | ~np.isfinite(numbers) if kind == "float" else null
        # no mask when nothing is missing: the array is the numpy buffer, not a copy
        return pa.array(numbers, mask=missing) if missing.any() else pa.array(numbers)
    if isinstance(values, np.ndarray) and values.dtype.kind in "mM":  # times stay times (ns included)
        return pa.array(values, mask=null)
    items = np.asarray(values, dtype=object)
    try:
        return pa.array(items, mask=null, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: their text, as the service's JSON has
        return pa.array(
            [None if m or v is None else str(v) for v, m in zip(items.tolist(), null.tolist(), strict=True)],
            pa.string(),
        )


def _answer_array(predictions: np.ndarray) -> Any:
    import pyarrow as pa

    values = np.asarray(predictions)
    if values.dtype.kind in "biuf":
        return pa.array(values)
    try:
        return pa.array(values.astype(object), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values.tolist()], pa.string())


# ----------------------------------------------------------------------------- reading


def decode(payload: bytes) -> Any:
    """A payload as an Arrow table (readers take the columns they need by name)."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.BufferReader(payload)).read_all()


def answers(table: Any) -> list[dict[str, Any]]:
    """Each row's answer as the service logs it: ``{"prediction": p}``, plus ``"probabilities"``
    (class -> probability) when the payload has them."""
    predictions = [_json_value(v) for v in table.column(PREDICTION).to_pylist()]
    classes = [n for n in table.column_names if n.startswith(PROBABILITY)]
    if not classes:
        return [{"prediction": p} for p in predictions]
    probabilities = [table.column(c).to_pylist() for c in classes]
    labels = [c[len(PROBABILITY) :] for c in classes]
    return [
        {"prediction": p, "probabilities": dict(zip(labels, ps, strict=True))}
        for p, ps in zip(predictions, zip(*probabilities, strict=True), strict=True)
    ]


def features(table: Any) -> list[dict[str, Any]]:
    """Each row's features as the service logs them (JSON values; null where missing)."""
    names = [n for n in table.column_names if n.startswith(FEATURE)]
    values = [[_json_value(v) for v in table.column(n).to_pylist()] for n in names]
    keys = [n[len(FEATURE) :] for n in names]
    if not names:
        return [{} for _ in range(table.num_rows)]
    return [dict(zip(keys, row, strict=True)) for row in zip(*values, strict=True)]


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _window(since: float | None, until: float) -> tuple[str, dict[str, Any]]:
    """The SQL condition ``since <= ts < until`` (no lower bound without ``since``) and its parameters."""
    params: dict[str, Any] = {"until": until}
    if since is None:
        return "ts < :until", params
    params["since"] = since
    return "ts < :until AND ts >= :since", params


def chunks(store: Store, since: float | None, until: float) -> list[Chunk]:
    """The logged chunks of ``[since, until)``, oldest first."""
    where, params = _window(since, until)
    rows = store.query(
        "SELECT batch_id, first_row, last_row, n_rows, ts, model_version FROM batch_chunks "
        f"WHERE {where} ORDER BY ts, batch_id, first_row",
        params,
    )
    return [Chunk(str(b), int(f), int(la), int(n), float(t), str(v or "")) for b, f, la, n, t, v in rows]


def payload(store: Store, batch_id: str, first_row: int) -> bytes | None:
    """The payload (Arrow IPC stream) of one chunk (None: no such chunk)."""
    found = store.query(
        "SELECT payload FROM batch_chunks WHERE batch_id = :b AND first_row = :f",
        {"b": batch_id, "f": first_row},
    )
    return bytes(found[0][0]) if found else None


def scan(store: Store, since: float | None, until: float) -> Iterator[tuple[Chunk, Any]]:
    """Each chunk of ``[since, until)`` with its payload decoded, one at a time."""
    for chunk in chunks(store, since, until):
        data = payload(store, chunk.batch_id, chunk.first_row)
        if data is not None:
            yield chunk, decode(data)


def traffic(store: Store, since: float | None, until: float) -> dict[str, int]:
    """Logged batch rows of ``[since, until)`` per model version (no payload read)."""
    where, params = _window(since, until)
    return {
        str(v or ""): int(n)
        for v, n in store.query(
            f"SELECT model_version, SUM(n_rows) FROM batch_chunks WHERE {where} GROUP BY model_version",
            params,
        )
    }


def batch_labels(store: Store, batch_id: str) -> dict[int, str]:
    """Row -> label (JSON text) of the feedback on ``batch_id``'s rows."""
    if is_sqlite_file(store.location):
        # request ids "<batch id>-<row>" sort between "<batch id>-" and "<batch id>." ("." follows
        # "-") under SQLite's binary collation: a range read on the key's index
        where, params = "request_id >= :lo AND request_id < :hi", {"lo": f"{batch_id}-", "hi": f"{batch_id}."}
    else:
        # a PostgreSQL database's collation may order by letters first, ignoring "-": a prefix
        # match is right whatever the collation (batch ids hold no LIKE wildcard)
        where, params = "request_id LIKE :prefix", {"prefix": f"{batch_id}-%"}
    out: dict[int, str] = {}
    for rid, label in store.query(f"SELECT request_id, label FROM feedback WHERE {where}", params):
        parsed = split_batch_request_id(str(rid))
        if parsed is not None and parsed[0] == batch_id:
            out[parsed[1]] = str(label)
    return out


def _rows_of(table: Any, wanted: Iterable[int]) -> tuple[Any, list[int]]:
    """The rows of ``table`` whose number is in ``wanted``: (taken table, their numbers)."""
    import pyarrow as pa

    numbers = np.asarray(table.column(ROW).to_numpy(), dtype=np.int64)
    keys = np.fromiter(wanted, dtype=np.int64)
    hit = np.flatnonzero(np.isin(numbers, keys))
    return table.take(pa.array(hit)), numbers[hit].tolist()


def labelled(
    store: Store, since: float | None, until: float, *, with_features: bool = False
) -> list[LoggedRow]:
    """The batch rows of ``[since, until)`` that have feedback, with their label.

    Reads the payload of a chunk only when one of its rows has a label; the features only
    ``with_features``.
    """
    out: list[LoggedRow] = []
    by_batch: dict[str, list[Chunk]] = {}
    for chunk in chunks(store, since, until):
        by_batch.setdefault(chunk.batch_id, []).append(chunk)
    for batch_id, spans in by_batch.items():
        labels = batch_labels(store, batch_id)
        if not labels:
            continue
        for chunk in spans:
            wanted = [r for r in labels if chunk.first_row <= r <= chunk.last_row]
            if not wanted:
                continue
            data = payload(store, chunk.batch_id, chunk.first_row)
            if data is None:
                continue
            taken, numbers = _rows_of(decode(data), wanted)
            feats = features(taken) if with_features else [None] * len(numbers)
            for row, answer, feat in zip(numbers, answers(taken), feats, strict=True):
                out.append(LoggedRow(f"{batch_id}-{row}", chunk.ts, chunk.version, feat, answer, labels[row]))
    return out


def lookup(store: Store, request_ids: Iterable[str]) -> dict[str, LoggedRow]:
    """The logged batch rows of ``request_ids`` (ids that are not batch rows are left out), with labels."""
    located = store.batch_chunks_of(request_ids)
    by_chunk: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for rid, (batch_id, first, row) in located.items():
        by_chunk.setdefault((batch_id, first), []).append((rid, row))
    out: dict[str, LoggedRow] = {}
    for (batch_id, first), items in by_chunk.items():
        meta = store.query(
            "SELECT ts, model_version, payload FROM batch_chunks WHERE batch_id = :b AND first_row = :f",
            {"b": batch_id, "f": first},
        )
        if not meta:
            continue
        ts, version, data = meta[0]
        taken, numbers = _rows_of(decode(bytes(data)), [row for _, row in items])
        labels: dict[str, str] = {}
        for start in range(0, len(items), 500):
            part = items[start : start + 500]
            labels.update(
                (str(rid), str(label))
                for rid, label in store.query(
                    "SELECT request_id, label FROM feedback WHERE request_id IN ("
                    + ", ".join(f":r{i}" for i in range(len(part)))
                    + ")",
                    {f"r{i}": rid for i, (rid, _) in enumerate(part)},
                )
            )
        for row, answer, feat in zip(numbers, answers(taken), features(taken), strict=True):
            rid = f"{batch_id}-{row}"
            out[rid] = LoggedRow(rid, float(ts), str(version or ""), feat, answer, labels.get(rid))
    return out
