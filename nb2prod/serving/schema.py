"""The service's input contract: a pydantic row model generated from the captured schema.

Each column of the training data (minus the target) becomes a field:

* ``float``: a JSON number (strings refused); NaN only when the column had missing
  values, ±inf only when the training data held infinities.
* ``int``: a JSON integer within int64 (``1.5`` and ``"1"`` refused).
* ``bool``: ``true``/``false`` only.
* ``category``: one of the recorded categories.
* ``string`` / ``datetime``: a string / an ISO timestamp.

Nullable columns accept ``null``; the others refuse it. Unknown keys are refused.

A request id (what ``/predict`` answers with and ``/feedback`` / ``nb2prod feedback`` take
back) is 1-64 letters, digits, ``.``, ``_`` or ``-``: :func:`request_id_problem` is the one
check of both.

This module runs inside the service: it imports nothing from nb2prod.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from .manifest import Column

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
REQUEST_ID_FIELD = "nb2prod_request_id"
REQUEST_ID_MAX = 64
REQUEST_ID_RULE = r"^[A-Za-z0-9._-]{1,64}$"
_REQUEST_ID = re.compile(REQUEST_ID_RULE)


def request_id_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a request id, or None when it is one.

    The message names the rule and never echoes the value (it may be huge or hostile).
    """
    if not isinstance(value, str):
        return f"a request id is a string, got {type(value).__name__}"
    if not value:
        return "the request id is empty"
    if len(value) > REQUEST_ID_MAX:
        return f"the request id has {len(value)} characters; at most {REQUEST_ID_MAX} are allowed"
    if _REQUEST_ID.fullmatch(value) is None:
        return "a request id holds only letters, digits, '.', '_' and '-'"
    return None


def validate_request_id(value: object) -> str:
    """``value`` when it is a valid request id; ValueError naming the problem otherwise."""
    problem = request_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(value, str)
    return value


def _finite_check(allow_nan: bool, allow_inf: bool) -> Any:
    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if math.isnan(value) and not allow_nan:
            raise ValueError("NaN is not allowed: the training data had no missing values here")
        if math.isinf(value) and not allow_inf:
            raise ValueError("infinity is not allowed: the training data had no infinite values here")
        return value

    return AfterValidator(check)


def field_type(column: Column, profile: Mapping[str, Any] | None) -> Any:
    """The pydantic type of one captured column, from its :func:`.contract.rule` (the one
    reading of nullability, NaN and ±inf that batch scoring applies too)."""
    from .contract import MAX_TEXT, rule  # contract imports this module: imported here, not at the top

    spec = rule(column, profile)
    kind = spec.kind
    if kind == "float":
        base: Any = Annotated[
            float,
            Field(strict=True, allow_inf_nan=spec.allow_inf or spec.allow_nan),
            _finite_check(spec.allow_nan, spec.allow_inf),
        ]
    elif kind == "int":
        base = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
    elif kind == "bool":
        base = Annotated[bool, Field(strict=True)]
    elif kind == "category" and spec.categories:
        base = Literal[spec.categories]
    elif kind == "datetime":
        from datetime import datetime

        base = datetime
    else:
        base = Annotated[str, Field(strict=True, max_length=MAX_TEXT)]
    return base | None if spec.nullable else base


def row_model(
    schema: Sequence[Column | Mapping[str, Any]],
    profile: Mapping[str, Any] | None = None,
    *,
    name: str = "Row",
    with_request_id: bool = False,
) -> type[BaseModel]:
    """A pydantic model of one input row; ``extra="forbid"`` unless it is the internal variant.

    The internal variant (``with_request_id``) is what the BentoML API parses after the
    guard validated the request with the strict model: it adds the request id.
    """
    fields: dict[str, Any] = {}
    for item in schema:
        column = item if isinstance(item, Column) else Column.from_dict(item)
        fields[column.name] = (field_type(column, (profile or {}).get(column.name)), ...)
    if with_request_id:
        fields[REQUEST_ID_FIELD] = (str, "")
    config = ConfigDict(extra="ignore" if with_request_id else "forbid", protected_namespaces=())
    return create_model(name, __config__=config, **fields)


def _reason(error: Mapping[str, Any], schema_kinds: Mapping[str, str]) -> str:
    kind = error.get("type", "")
    msg = str(error.get("msg", ""))
    if kind == "missing":
        return "missing_field"
    if kind == "extra_forbidden":
        return "extra_field"
    if kind == "literal_error":
        return "unseen_category"
    if "NaN" in msg or "infinity" in msg or kind == "finite_number":
        return "not_finite"
    loc = error.get("loc", ())
    column = str(loc[-1]) if loc else ""
    if (
        kind.endswith("_type")
        and column in schema_kinds
        and kind.startswith(("float", "int", "bool", "string"))
    ):
        # pydantic says "float_type" for a null in a non-nullable float column too
        return "type"
    if kind in ("greater_than_equal", "less_than_equal"):
        return "out_of_range"
    return "type"


def describe_errors(
    exc: ValidationError, schema_kinds: Mapping[str, str], *, prefix: str = "rows"
) -> tuple[str, list[dict[str, str]]]:
    """Turn a pydantic error into (reason, [{field, problem}]) without echoing the input."""
    return describe_error_list(exc.errors(include_input=True, include_url=False), schema_kinds, prefix=prefix)


def describe_error_list(
    errors: Iterable[Mapping[str, Any]],
    schema_kinds: Mapping[str, str],
    *,
    prefix: str = "rows",
    strip: str | None = None,
) -> tuple[str, list[dict[str, str]]]:
    """(reason, [{field, problem, reason}]) of pydantic-style error dicts (at most 20), input never echoed.

    Used for FastAPI's ``RequestValidationError`` too: its ``loc`` starts with ``"body"``,
    dropped with ``strip="body"``.
    """
    problems: list[dict[str, str]] = []
    reasons: list[str] = []
    for n, error in enumerate(errors):
        if n >= 20:
            break
        loc = tuple(error.get("loc", ()))
        if strip is not None and loc[:1] == (strip,):
            loc = loc[1:]
        parts = [prefix]
        for item in loc:
            if isinstance(item, int):
                parts[-1] = f"{parts[-1]}[{item}]"
            else:
                text = str(item)
                if len(text) > 100:
                    text = text[:97] + "..."
                parts.append(text)
        column = str(loc[-1]) if loc else ""
        reason = _reason(error, schema_kinds)
        msg = _without_input(str(error.get("msg", "invalid value")))
        if error.get("input", 0) is None and reason == "type":
            # the input itself is never echoed; only whether it was null
            reason, msg = "null", "null is not allowed: the column had no missing values in the training data"
        elif error.get("type", "").endswith("_type") and column in schema_kinds:
            msg = f"{msg} (expected {schema_kinds[column]})"
        reasons.append(reason)
        problems.append({"field": ".".join(parts), "problem": msg, "reason": reason})
    return (reasons[0] if reasons else "invalid"), problems


def _without_input(msg: str) -> str:
    """A pydantic message cut where it would quote the input (``..., input_value=...``), bounded."""
    msg = msg.split(", input_value=", 1)[0].split(" [type=", 1)[0]
    return msg if len(msg) <= 300 else msg[:297] + "..."
