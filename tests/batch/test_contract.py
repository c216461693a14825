"""The vectorised batch contract (serving/contract.py) against the service's pydantic row model.

For random tables holding every kind of good and bad cell, a row passes the batch check
exactly when the service's row model accepts it, and a refused row's reason is the one the
service's ``describe_errors`` gives."""

from __future__ import annotations

import math
import random
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from nb2prod.serving import contract
from nb2prod.serving.schema import describe_errors, row_model

SCHEMA: list[dict[str, Any]] = [
    {"name": "x", "kind": "float", "dtype": "float64", "nullable": False},
    {"name": "m", "kind": "float", "dtype": "float64", "nullable": True},
    {"name": "w", "kind": "float", "dtype": "float64", "nullable": False},
    {"name": "i", "kind": "int", "dtype": "int64", "nullable": False},
    {"name": "b", "kind": "bool", "dtype": "bool", "nullable": False},
    {"name": "c", "kind": "category", "dtype": "category", "nullable": True, "categories": ["a", "b"]},
    {"name": "s", "kind": "string", "dtype": "object", "nullable": False},
]
PROFILE = {"w": {"n_infinite": 3}}  # w had infinities in training: ±inf allowed there
CELLS: dict[str, tuple[pa.DataType, list[Any]]] = {
    "x": (pa.float64(), [1.5, 0.0, -2.0, math.nan, math.inf, -math.inf, None]),
    "m": (pa.float64(), [1.5, math.nan, None, math.inf]),
    "w": (pa.float64(), [1.0, math.inf, -math.inf, math.nan, None]),
    "i": (pa.int64(), [0, 7, -3, None]),
    "b": (pa.bool_(), [True, False, None]),
    "c": (pa.string(), ["a", "b", "z", None]),
    "s": (pa.string(), ["t", "", "y" * 10_001, None]),
}


def _table(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    columns = {name: [rng.choice(values) for _ in range(n)] for name, (_, values) in CELLS.items()}
    return pa.table({name: pa.array(columns[name], CELLS[name][0]) for name in CELLS})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_row_passes_exactly_when_the_service_accepts_it(seed: int) -> None:
    rules = contract.rules(SCHEMA, PROFILE)
    table = _table(400, seed)
    checked = contract.check(table, rules)
    model = row_model(SCHEMA, PROFILE)
    kinds = {c["name"]: c["kind"] for c in SCHEMA}
    refused = [i for i in range(table.num_rows) if not checked.ok[i]]
    assert 0 < len(refused) < table.num_rows
    explained = dict(zip(refused, contract.explain(table, checked, refused, SCHEMA, PROFILE), strict=True))
    for i, row in enumerate(table.to_pylist()):
        try:
            model.model_validate(row)
        except ValidationError as exc:
            reason, detail = describe_errors(exc, kinds, prefix="row")
            assert not checked.ok[i], row
            assert explained[i]["reason"] == reason, (row, explained[i])
            assert explained[i]["field"] == detail[0]["field"].removeprefix("row."), (row, explained[i])
        else:
            assert checked.ok[i], row


def test_text_cells_are_parsed_by_kind() -> None:
    rules = contract.rules(SCHEMA, PROFILE)
    rows = [
        ["1.5", "", "inf", "3", "true", "a", "t"],  # good (w allows inf)
        ["abc", "", "1", "3", "true", "a", "t"],  # not a number: type
        ["NaN", "", "1", "3", "true", "a", "t"],  # NaN where the column had none: not_finite
        ["1", "", "1", "2.5", "true", "a", "t"],  # not an integer: type
        ["1", "", "1", "3", "yes", "a", "t"],  # not a boolean: type
        ["1", "", "1", "3", "False", "q", "t"],  # unseen category
        ["1", "", "1", "", "False", "", "t"],  # null in a non-nullable int
    ]
    names = [c["name"] for c in SCHEMA]
    table = pa.table({n: pa.array([r[j] or None for r in rows], pa.string()) for j, n in enumerate(names)})
    checked = contract.check(table, rules, text=True)
    assert checked.ok.tolist() == [True] + [False] * 6
    why = contract.explain(table, checked, list(range(1, 7)), SCHEMA, PROFILE)
    assert [(w["reason"], w["field"]) for w in why] == [
        ("type", "x"),
        ("not_finite", "x"),
        ("type", "i"),
        ("type", "b"),
        ("unseen_category", "c"),
        ("null", "i"),
    ]
    frame = contract.frame(checked, rules, checked.ok.nonzero()[0])
    assert frame.loc[0, "w"] == math.inf and frame["i"].dtype == "int64" and frame["b"].tolist() == [True]


def test_whole_floats_of_an_int_column_are_read_as_ints() -> None:
    rules = contract.rules([SCHEMA[3]])
    table = pa.table({"i": pa.array([2.0, 2.5, -0.0, 1e30], pa.float64())})
    checked = contract.check(table, rules)
    assert checked.ok.tolist() == [True, False, True, False]
    assert contract.frame(checked, rules, checked.ok.nonzero()[0])["i"].tolist() == [2, 0]


def test_columns_that_cannot_match_name_every_problem() -> None:
    rules = contract.rules(SCHEMA, PROFILE)
    types = {
        "x": pa.string(),
        "m": pa.float64(),
        "i": pa.int32(),
        "b": pa.int64(),
        "c": pa.dictionary(pa.int8(), pa.string()),
        "s": pa.string(),
        "id": pa.int64(),
        "zz": pa.int8(),
    }
    with pytest.raises(contract.ColumnMismatch) as err:
        contract.check_columns(list(types), rules, types=types, allowed_extra=["id"])
    found = {(p["field"], p["reason"]) for p in err.value.problems}
    assert found == {("x", "type"), ("w", "missing_field"), ("b", "type"), ("zz", "extra_field")}
