"""Notebook parameters: inspected from the ``parameters`` cell, checked and typed like the defaults
(no kernel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nb2prod.exceptions import ParameterError, UsageError
from nb2prod.execute import check_parameters, inspect_parameters, load_params_file
from tests.execute.runs import NOTEBOOKS, cli, runs


def test_parameters_are_typed_like_the_defaults() -> None:
    nb = NOTEBOOKS / "params.ipynb"
    specs = {s.name: s.type_name for s in inspect_parameters(nb) or []}
    assert specs == {"x": "float", "n": "int", "name": "str", "flag": "bool", "noise": "float"}
    typed = check_parameters(
        nb, {"x": "2", "n": "4", "name": "7", "flag": "true"}, from_text=["x", "n", "name", "flag"]
    )
    assert typed == {"x": 2.0, "n": 4, "name": "7", "flag": True}
    assert type(typed["x"]) is float and type(typed["n"]) is int
    # Values from a YAML file are already typed: an int for a float default becomes a float.
    assert check_parameters(nb, {"x": 3, "n": 2.0}) == {"x": 3.0, "n": 2}


def test_annotated_parameters_use_the_annotation() -> None:
    specs = {s.name: s for s in inspect_parameters(NOTEBOOKS / "complex_parameters.ipynb") or []}
    assert specs["a"].type_name == "float"
    assert check_parameters(NOTEBOOKS / "complex_parameters.ipynb", {"a": "1"}, from_text=["a"]) == {"a": 1.0}


def test_unknown_parameter_lists_valid_ones_and_suggests_nearest() -> None:
    with pytest.raises(ParameterError) as err:
        check_parameters(NOTEBOOKS / "params.ipynb", {"nmae": "b"}, from_text=["nmae"])
    text = str(err.value)
    assert "no parameter 'nmae'" in text and "did you mean 'name'" in text
    assert "flag, n, name, noise, x" in text
    assert err.value.name == "nmae"


@pytest.mark.parametrize(("name", "value"), [("x", "abc"), ("n", "1.5"), ("flag", "maybe")])
def test_values_that_do_not_fit_the_default_are_refused(name: str, value: str) -> None:
    with pytest.raises(ParameterError, match=f"parameter '{name}' expects"):
        check_parameters(NOTEBOOKS / "params.ipynb", {name: value}, from_text=[name])


def test_parameters_for_a_notebook_without_parameters_cell_are_refused() -> None:
    with pytest.raises(ParameterError, match="no cell tagged 'parameters'"):
        check_parameters(NOTEBOOKS / "no_parameters.ipynb", {"msg": "hi"}, from_text=["msg"])
    assert inspect_parameters(NOTEBOOKS / "no_parameters.ipynb") is None
    assert check_parameters(NOTEBOOKS / "no_parameters.ipynb", {}) == {}


def test_params_file(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("x: 0.5\nname: b\n", encoding="utf-8")
    assert load_params_file(file) == {"x": 0.5, "name": "b"}
    file.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ParameterError, match="mapping"):
        load_params_file(file)


def test_missing_notebook_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="notebook not found"):
        check_parameters(tmp_path / "nope.ipynb", {"x": 1})


def test_cli_refuses_bad_parameters_before_anything_runs(project: Path, client: Any) -> None:
    proc = cli("run", str(NOTEBOOKS / "params.ipynb"), "-p", "nmae", "b")
    assert proc.returncode == 2, proc.stderr
    assert "did you mean 'name'" in proc.stderr
    assert runs(client) == []


def test_notebook_without_kernel_name_is_a_usage_error(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("C = 1.0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    path = tmp_path / "nokernel.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(UsageError, match=r"nokernel\.ipynb") as caught:
        inspect_parameters(path)
    assert caught.value.hint is not None and "kernel" in caught.value.hint
