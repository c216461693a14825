"""A low-cardinality string column becomes a closed set of categories in the exported contract."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _column_and_profile(values: list[str]) -> tuple[object, dict]:
    from nb2prod.capture.profile import summarize
    from nb2prod.serving.manifest import Column

    schema, profile = summarize(pd.DataFrame({"region": pd.Series(values, dtype=object)}))
    return Column.from_dict(schema[0].to_dict()), profile["region"].to_dict()


def test_a_string_column_of_few_values_gets_them_as_categories_and_keeps_its_dtype() -> None:
    from nb2prod.export.manifest import closed_categories

    rng = np.random.default_rng(0)
    column, profile = _column_and_profile(list(rng.choice(["north", "south", "east", "west"], 400)))
    assert column.kind == "string"  # the capture's record is unchanged (and so is its digest)
    closed = closed_categories(column, profile)
    assert closed.kind == "category" and closed.categories == ["east", "north", "south", "west"]
    assert closed.dtype == column.dtype and closed.extra["categories_from"] == "profile"


def test_names_free_text_and_rare_values_stay_open_strings() -> None:
    from nb2prod.export.manifest import MAX_CLOSED_CATEGORIES, closed_categories

    many = [f"customer-{i}" for i in range(MAX_CLOSED_CATEGORIES + 1)] * 10
    column, profile = _column_and_profile(many)
    assert closed_categories(column, profile).kind == "string"
    few_rows = ["a", "b", "c", "d", "e", "f"]  # every value seen once: not evidence of a closed set
    column, profile = _column_and_profile(few_rows)
    assert closed_categories(column, profile).kind == "string"


def test_the_service_frame_feeds_the_model_the_strings_it_was_fitted_on() -> None:
    from nb2prod.serving.runtime import Runtime

    manifest = {
        "name": "m",
        "model_version": "1",
        "schema": [
            {"name": "region", "kind": "category", "dtype": "object", "categories": ["east", "west"]},
            {"name": "x", "kind": "float", "dtype": "float64"},
        ],
        "model": {"flavor": "sklearn"},
        "serving": {},
    }
    runtime = Runtime(manifest, "/nowhere", background=False)
    frame = runtime.frame([{"region": "east", "x": 1.0}])
    # the strings themselves (as for an open string column), not a pandas categorical
    assert not isinstance(frame["region"].dtype, pd.CategoricalDtype)
    assert frame["region"].tolist() == ["east"]
