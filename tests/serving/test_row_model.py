"""The pydantic row model generated from the captured schema."""

from __future__ import annotations

import pytest


def test_row_model_rules_follow_the_training_data() -> None:
    from pydantic import ValidationError

    from nb2prod.serving.schema import row_model

    schema = [
        {"name": "x", "kind": "float", "dtype": "float64", "nullable": False},
        {"name": "m", "kind": "float", "dtype": "float64", "nullable": True},
        {"name": "c", "kind": "category", "dtype": "category", "nullable": False, "categories": ["a", "b"]},
    ]
    row = row_model(schema, {"m": {"n_infinite": 0}})
    row(x=1.0, m=None, c="a")
    row(x=1, m=float("nan"), c="b")  # a missing value in a column that had missing values
    for bad in (
        {"x": float("nan"), "m": 1.0, "c": "a"},
        {"x": 1.0, "m": float("inf"), "c": "a"},
        {"x": "1.0", "m": 1.0, "c": "a"},
        {"x": 1.0, "m": 1.0, "c": "z"},
        {"x": 1.0, "m": 1.0, "c": "a", "y": 2},
        {"m": 1.0, "c": "a"},
    ):
        with pytest.raises(ValidationError):
            row(**bad)


def test_row_model_reads_the_typed_columns_too() -> None:
    from pydantic import ValidationError

    from nb2prod.serving.manifest import Column
    from nb2prod.serving.schema import REQUEST_ID_FIELD, row_model

    columns = [Column(name="n", kind="int", dtype="int64"), Column(name="b", kind="bool", dtype="bool")]
    row = row_model(columns)
    row(n=3, b=True)
    with pytest.raises(ValidationError):
        row(n=2.5, b=True)
    inner = row_model(columns, with_request_id=True)
    assert getattr(inner(n=1, b=False, **{REQUEST_ID_FIELD: "r1"}), REQUEST_ID_FIELD) == "r1"
