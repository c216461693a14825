"""The service's row contract on a whole table at once: which rows of a file may be scored.

The service checks one JSON row at a time with the pydantic row model (:mod:`.schema`). A
file of millions of rows needs the same rules over Arrow columns, vectorised. The rules'
parameters come from one place, :func:`rules` (what each column accepts: the same inputs
``schema.field_type`` builds its pydantic field from), and the reason and field of a refused
row are the pydantic row model's own (:func:`explain` runs the service's model and
``schema.describe_errors`` on the refused rows only), so a batch reject reads like the 422.

What a file adds to JSON: its columns have types. A Parquet column must hold the kind the
contract names (numbers for ``float``, integers for ``int``, booleans for ``bool``, text
for ``string``/``category``); one that cannot is a :class:`ColumnMismatch` before any row
is read. CSV cells are text, parsed by the column's kind (a cell that does not parse is a
``type`` reject, as a JSON string in a number field is). A whole float of an ``int`` column
(``3.0``, as pandas writes an int column with gaps) is read as the integer.

Copied into the Bento with the rest of ``serving/``: it imports nothing from nb2prod, and
imports pyarrow and pandas only when called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .manifest import Column
from .schema import INT64_MAX, INT64_MIN, describe_errors, row_model

MAX_TEXT = 10_000
"""Longest ``string`` value (the row model's ``max_length``)."""

__all__ = ["Checked", "ColumnMismatch", "Rule", "check", "check_columns", "explain", "rules"]


@dataclass(frozen=True)
class Rule:
    """What one input column accepts (the parameters of its pydantic field, too).

    Attributes:
        name: Column name.
        kind: ``float``, ``int``, ``bool``, ``category``, ``datetime`` or ``string``.
        dtype: The training frame's dtype (the model is given this dtype).
        nullable: null accepted (the training data had missing values).
        allow_nan: NaN accepted (float columns: when nullable).
        allow_inf: ±inf accepted (the training data held infinities).
        categories: The accepted values of a category column.
        ordered: Whether those categories are ordered.
    """

    name: str
    kind: str
    dtype: str = ""
    nullable: bool = False
    allow_nan: bool = False
    allow_inf: bool = False
    categories: tuple[Any, ...] | None = None
    ordered: bool = False


def rule(column: Column, profile: Mapping[str, Any] | None) -> Rule:
    """The rule of one captured column (``schema.field_type`` reads the same facts)."""
    kind = column.kind
    if kind == "category" and not column.categories:
        kind = "string"
    return Rule(
        name=column.name,
        kind=kind,
        dtype=column.dtype or "",
        nullable=bool(column.nullable),
        allow_nan=kind == "float" and bool(column.nullable),
        allow_inf=kind == "float" and bool(profile and profile.get("n_infinite")),
        categories=tuple(column.categories) if kind == "category" and column.categories else None,
        ordered=bool(column.ordered),
    )


def rules(
    schema: Sequence[Column | Mapping[str, Any]], profile: Mapping[str, Any] | None = None
) -> list[Rule]:
    """The rule of every input column, in the contract's order."""
    out = []
    for item in schema:
        column = item if isinstance(item, Column) else Column.from_dict(item)
        out.append(rule(column, (profile or {}).get(column.name)))
    return out


class ColumnMismatch(ValueError):
    """A table whose columns cannot match the contract: ``problems`` are {field, reason, problem}."""

    def __init__(self, problems: Sequence[Mapping[str, str]]) -> None:
        self.problems = [dict(p) for p in problems]
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in self.problems[:5]))


def _type_fits(kind: str, dtype: Any, categories: tuple[Any, ...] | None) -> bool:
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_dictionary(dtype):
        dtype = dtype.value_type
    if t.is_null(dtype):
        return True
    if kind == "float":
        return bool(t.is_floating(dtype) or t.is_integer(dtype) or t.is_decimal(dtype))
    if kind == "int":
        return bool(t.is_integer(dtype) or t.is_floating(dtype))
    if kind == "bool":
        return bool(t.is_boolean(dtype))
    if kind == "datetime":
        return bool(
            t.is_timestamp(dtype) or t.is_date(dtype) or t.is_string(dtype) or t.is_large_string(dtype)
        )
    if kind == "category" and categories and not all(isinstance(c, str) for c in categories):
        return bool(pa.array(list(categories)).type == dtype or t.is_integer(dtype))
    return bool(t.is_string(dtype) or t.is_large_string(dtype))


def check_columns(
    names: Sequence[str],
    contract: Sequence[Rule],
    *,
    types: Mapping[str, Any] | None = None,
    allowed_extra: Sequence[str] = (),
) -> None:
    """Refuse a table whose columns cannot match: missing, extra or ill-typed columns.

    Args:
        names: The table's column names.
        contract: The rules (:func:`rules`).
        types: Arrow type of each column (None for text, e.g. CSV, parsed by kind).
        allowed_extra: Columns that may be there beside the contract's (an id column).

    Raises:
        ColumnMismatch: naming each column, with the service's reason (``missing_field``,
            ``extra_field``, ``type``).
    """
    present = set(names)
    wanted = {r.name for r in contract}
    problems: list[dict[str, str]] = []
    for r in contract:
        if r.name not in present:
            problems.append({"field": r.name, "reason": "missing_field", "problem": "Field required"})
        elif types is not None and not _type_fits(r.kind, types[r.name], r.categories):
            problems.append(
                {
                    "field": r.name,
                    "reason": "type",
                    "problem": f"the column holds {types[r.name]}; the model reads {r.kind}",
                }
            )
    for name in names:
        if name not in wanted and name not in allowed_extra:
            problems.append(
                {"field": name, "reason": "extra_field", "problem": "Extra inputs are not permitted"}
            )
    if problems:
        raise ColumnMismatch(problems)


@dataclass
class Checked:
    """One checked table: per column the values as the model reads them, and per cell whether it broke a rule.

    Attributes:
        rows: Number of rows.
        values: Column -> numpy array of the converted values (any value where ``bad`` or ``null``).
        null: Column -> null mask.
        bad: Column -> mask of cells that break the column's rule.
        unparsed: Column -> mask of text cells that are not numbers (float columns of text).
        ok: Row mask: no cell of the row breaks a rule.
    """

    rows: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    null: dict[str, np.ndarray] = field(default_factory=dict)
    bad: dict[str, np.ndarray] = field(default_factory=dict)
    unparsed: dict[str, np.ndarray] = field(default_factory=dict)
    ok: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


_NAN_TEXT = {"nan", "+nan", "-nan"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}


def _parse_floats(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text cells as floats: (values, mask of cells that are not numbers)."""
    import pandas as pd

    values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    lowered = np.array([str(s).strip().lower() for s in text], dtype=object) if len(text) else text
    unparsed = np.isnan(values) & ~np.isin(lowered, list(_NAN_TEXT))
    return values, unparsed


def _ints_from_text(text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:  # clean text parses in one go; else cell by cell
        return text.astype(str).astype(np.int64), np.zeros(len(text), dtype=bool), np.zeros(0, dtype=bool)
    except (ValueError, OverflowError):
        pass
    values = np.zeros(len(text), dtype=np.int64)
    bad = np.zeros(len(text), dtype=bool)
    for i, s in enumerate(text.tolist()):
        try:
            number = int(str(s).strip())
        except ValueError:
            bad[i] = True
            continue
        if INT64_MIN <= number <= INT64_MAX:
            values[i] = number
        else:
            bad[i] = True
    return values, bad, np.zeros(len(text), dtype=bool)


def _column(arr: Any, r: Rule, text: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(values, null mask, bad mask, unparsed text mask) of one Arrow column under rule ``r``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as t

    n = len(arr)
    if t.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    bad = np.zeros(n, dtype=bool)
    unparsed = np.zeros(n, dtype=bool)
    if t.is_null(arr.type):
        values: np.ndarray = np.full(n, np.nan if r.kind == "float" else None, dtype=object)
        if r.kind == "float":
            values = values.astype(np.float64)
    elif r.kind == "float":
        if text:
            raw = arr.to_numpy(zero_copy_only=False)
            values, unparsed = _parse_floats(np.where(null, "0", raw))
            unparsed &= ~null
            bad |= unparsed
        else:
            values = pc.cast(arr, pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
        present = ~null
        nan = np.isnan(values) & present
        inf = np.isinf(values) & present
        if not r.allow_nan:
            bad |= nan
        if not r.allow_inf:
            bad |= inf
        values = np.where(null, np.nan, values)
    elif r.kind == "int":
        if text:
            raw = np.where(null, "0", arr.to_numpy(zero_copy_only=False))
            values, not_int, _ = _ints_from_text(raw)
            bad |= not_int
        elif t.is_floating(arr.type):
            floats = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
            whole = np.isfinite(floats) & (np.floor(floats) == floats)
            whole &= (floats >= -(2.0**63)) & (floats < 2.0**63)
            bad |= ~whole
            values = np.where(whole, floats, 0).astype(np.int64)
        elif arr.type == pa.uint64():
            raw_u = arr.fill_null(0).to_numpy(zero_copy_only=False)
            bad |= raw_u > INT64_MAX
            values = np.where(bad, 0, raw_u).astype(np.int64)
        else:
            values = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    elif r.kind == "bool":
        if text:
            raw = arr.to_numpy(zero_copy_only=False)
            truth = np.isin(raw, list(_TRUE))
            bad |= ~(truth | np.isin(raw, list(_FALSE))) & ~null
            values = truth
        else:
            values = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    elif r.kind == "category":
        assert r.categories is not None
        allowed = pa.array(list(r.categories))
        try:
            cast = pc.cast(arr, allowed.type) if arr.type != allowed.type else arr
            member = pc.is_in(cast, value_set=allowed).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            member = np.zeros(n, dtype=bool)
        bad |= ~np.asarray(member, dtype=bool) & ~null
        values = arr.to_numpy(zero_copy_only=False)
    elif r.kind == "datetime":
        values = arr.to_numpy(zero_copy_only=False)
        if t.is_string(arr.type) or t.is_large_string(arr.type):
            bad |= _bad_datetimes(values) & ~null
    else:
        values = arr.to_numpy(zero_copy_only=False)
        if t.is_string(arr.type) or t.is_large_string(arr.type):
            bad |= (pc.utf8_length(arr).fill_null(0).to_numpy(zero_copy_only=False) > MAX_TEXT) & ~null
    if not r.nullable:
        bad |= null
    return values, null, bad, unparsed


def _bad_datetimes(values: np.ndarray) -> np.ndarray:
    from datetime import datetime

    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(datetime)
    verdict: dict[Any, bool] = {}
    for value in set(values.tolist()) - {None}:
        try:
            adapter.validate_python(value)
            verdict[value] = False
        except ValidationError:
            verdict[value] = True
    return np.array([verdict.get(v, False) for v in values.tolist()], dtype=bool)


def check(table: Any, contract: Sequence[Rule], *, text: bool = False) -> Checked:
    """Check every row of an Arrow table or record batch against ``contract``.

    Args:
        table: A ``pyarrow.Table`` or ``RecordBatch`` holding every contract column
            (:func:`check_columns` first).
        contract: The rules.
        text: The columns are text to parse by kind (CSV).
    """
    n = table.num_rows
    out = Checked(rows=n, ok=np.ones(n, dtype=bool))
    for r in contract:
        column = table.column(r.name)
        if hasattr(column, "combine_chunks"):
            column = column.combine_chunks()
        values, null, bad, unparsed = _column(column, r, text)
        out.values[r.name], out.null[r.name], out.bad[r.name] = values, null, bad
        out.unparsed[r.name] = unparsed
        out.ok &= ~bad
    return out


def frame(checked: Checked, contract: Sequence[Rule], rows: np.ndarray | None = None) -> Any:
    """The rows ``rows`` (all when None) of a checked table as the DataFrame the model reads.

    Each column has the training frame's dtype, as the service's ``Runtime.frame`` builds it.
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for r in contract:
        values = checked.values[r.name]
        null = checked.null[r.name]
        if rows is not None:
            values, null = values[rows], null[rows]
        if r.kind == "float":
            dtype = r.dtype if r.dtype not in ("", "object") else "float64"
            data[r.name] = values.astype(dtype, copy=False)
        elif r.kind in ("int", "bool"):
            if null.any() or (r.dtype and r.dtype[:1].isupper()):
                masked = pd.array(values, dtype="Int64" if r.kind == "int" else "boolean")
                masked[null] = pd.NA
                data[r.name] = masked.astype(r.dtype) if r.dtype else masked  # type: ignore[call-overload]
            else:
                data[r.name] = values.astype(r.dtype or ("int64" if r.kind == "int" else "bool"), copy=False)
        elif r.kind == "category":
            data[r.name] = pd.Categorical(
                np.where(null, None, values),  # type: ignore[call-overload]
                categories=list(r.categories or ()),
                ordered=r.ordered,
            )
        elif r.kind == "datetime":
            data[r.name] = pd.to_datetime(values)
        else:
            data[r.name] = np.where(null, None, values).astype(object)  # type: ignore[call-overload]
    return pd.DataFrame(data, columns=[r.name for r in contract], copy=False)


def python_value(value: Any, null: bool) -> Any:
    """One converted cell as the JSON value a client would send (None for null)."""
    if null:
        return None
    return value.item() if isinstance(value, np.generic) else value


def explain(
    table: Any,
    checked: Checked,
    rows: Sequence[int],
    schema: Sequence[Column | Mapping[str, Any]],
    profile: Mapping[str, Any] | None = None,
    *,
    model: Any = None,
) -> list[dict[str, str]]:
    """Why each of ``rows`` was refused, as the service's 422 says it: {reason, field, problem}.

    Each refused row is given to the service's own row model as the JSON row a client would
    send (the cells that broke a rule as they are in the file, a number read from text as that
    number, the others as read), and the first error is described by ``schema.describe_errors``.

    Args:
        table: The checked table.
        checked: :func:`check`'s result.
        rows: Row positions to explain.
        schema: The contract's columns (the row model is built from them unless ``model``).
        profile: The reference profiles (for which columns allow ±inf).
        model: A strict row model built before (saves rebuilding it per chunk).
    """
    from pydantic import ValidationError

    row = model or row_model(schema, profile)
    columns = [c if isinstance(c, Column) else Column.from_dict(c) for c in schema]
    kinds = {c.name: c.kind for c in columns}
    originals = {c.name: table.column(c.name) for c in columns}
    out = []
    for i in rows:
        payload: dict[str, Any] = {}
        for c in columns:
            if checked.bad[c.name][i] and not (c.kind == "float" and not checked.unparsed[c.name][i]):
                payload[c.name] = originals[c.name][i].as_py()
            else:
                payload[c.name] = python_value(checked.values[c.name][i], bool(checked.null[c.name][i]))
        try:
            row.model_validate(payload)
        except ValidationError as exc:
            reason, detail = describe_errors(exc, kinds, prefix="row")
            first = detail[0] if detail else {"field": "row", "problem": "invalid"}
            out.append(
                {"reason": reason, "field": first["field"].removeprefix("row."), "problem": first["problem"]}
            )
            continue
        broken = next(c.name for c in columns if checked.bad[c.name][i])
        out.append({"reason": "type", "field": broken, "problem": "refused by the batch contract"})
    return out
