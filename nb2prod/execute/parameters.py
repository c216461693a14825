"""Notebook parameters: what a ``parameters`` cell declares, and values checked and typed like it.

``nb2prod run -p NAME VALUE`` and ``-f params.yaml`` go through :func:`check_parameters`
before anything runs: an unknown name (the nearest valid one is suggested) or a value that
does not fit the default is a :class:`~nb2prod.exceptions.ParameterError`.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2prod.exceptions import ParameterError, UsageError


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter declared in a notebook's ``parameters`` cell.

    Attributes:
        name: Variable name.
        type_name: Annotated type, else the type of the default (``"float"``, ``"str"``...), else ``"None"``.
        default: The default as written in the cell.
        help: The trailing comment, if any.
    """

    name: str
    type_name: str
    default: str
    help: str = ""


_inspected: dict[tuple[str, int, int], list[ParameterSpec] | None] = {}


def inspect_parameters(notebook: str | Path) -> list[ParameterSpec] | None:
    """The parameters a notebook declares; None when it has no cell tagged ``parameters``.

    Raises:
        UsageError: the notebook is missing or unreadable.
    """
    path = notebook_file(notebook)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _inspected:
        _inspected[key] = _inspect(path)
    specs = _inspected[key]
    return None if specs is None else list(specs)


def _inspect(path: Path) -> list[ParameterSpec] | None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        return None
    import papermill

    try:
        inspected = papermill.inspect_notebook(str(path))
    except ValueError as exc:  # papermill: "No kernel name found in notebook and no override provided."
        raise UsageError(
            f"cannot read the parameters of {path.name}: {exc}",
            hint="open the notebook in Jupyter, choose a kernel and save it (its metadata then names the kernel)",
        ) from None
    specs = []
    for name, raw in inspected.items():
        type_name = str(raw.get("inferred_type_name") or "None")
        default = str(raw.get("default") or "")
        if type_name == "None":
            value = _literal(default)
            if value is not _NO_VALUE and value is not None:
                type_name = type(value).__name__
        specs.append(ParameterSpec(name, type_name, default, str(raw.get("help") or "")))
    return specs


_NO_VALUE = object()


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NO_VALUE


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(spec: ParameterSpec, value: Any, from_text: bool) -> Any:
    """Give ``value`` the type of the parameter's default (a float default gets a float)."""
    kind = spec.type_name
    bad = ParameterError(
        f"parameter '{spec.name}' expects {kind} (default {spec.default}), got {value!r}",
        name=spec.name,
        hint=f"pass a {kind} value, e.g. -p {spec.name} {spec.default}",
    )
    if kind == "bool":
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and not from_text:
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad from None
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            result = float(value) if not isinstance(value, str) else float(value.strip())
        except (TypeError, ValueError):
            raise bad from None
        return result
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if from_text and isinstance(value, str):
        # No typed default (None, lists, dicts...): read the text as YAML, like papermill -y.
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def check_parameters(
    notebook: str | Path, given: Mapping[str, Any], *, from_text: Iterable[str] = ()
) -> dict[str, Any]:
    """Check parameters against the notebook's ``parameters`` cell and type them like the defaults.

    Args:
        notebook: The source notebook.
        given: Name -> value.
        from_text: Names whose value is command-line text (typed from the default; other values,
            e.g. from a YAML file, are already typed and only converted where the default asks).

    Raises:
        ParameterError: unknown name (the valid ones and the nearest are named), parameters for a
            notebook without a ``parameters`` cell, or a value that does not fit its default.
    """
    if not given:
        return {}
    specs = inspect_parameters(notebook)
    path = notebook_file(notebook)
    if specs is None:
        raise ParameterError(
            f"{path.name} has no cell tagged 'parameters', so {', '.join(sorted(given))} cannot be set",
            hint="tag the cell that holds the defaults with 'parameters' (Jupyter: View > Cell Toolbar > Tags)",
        )
    by_name = {s.name: s for s in specs}
    texts = set(from_text)
    typed: dict[str, Any] = {}
    for name, value in given.items():
        spec = by_name.get(name)
        if spec is None:
            valid = ", ".join(sorted(by_name)) or "(none)"
            near = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.5)
            hint = (
                f"did you mean '{near[0]}'? valid parameters: {valid}"
                if near
                else f"valid parameters: {valid}"
            )
            raise ParameterError(f"{path.name} has no parameter '{name}'", name=name, hint=hint)
        typed[name] = _coerce(spec, value, name in texts)
    return typed


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Parameters from a YAML (or JSON) mapping file.

    Raises:
        ParameterError: not a mapping of names to values.
    """
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read parameters file {file}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError(
            f"parameters file {file} must be a mapping of names to values", hint="e.g. 'C: 0.5'"
        )
    return data


def notebook_file(notebook: str | Path) -> Path:
    """The notebook's resolved path.

    Raises:
        UsageError: it does not exist, or it is not an ``.ipynb`` file.
    """
    path = Path(notebook).expanduser()
    if not path.is_file():
        raise UsageError(f"notebook not found: {path}", hint="pass the path of an existing .ipynb file")
    if path.suffix != ".ipynb":
        raise UsageError(f"{path} is not a notebook (.ipynb)", hint="pass the path of an .ipynb file")
    return path.resolve()


def experiment_default(source: Path, params: Mapping[str, Any]) -> str | None:
    """A notebook whose parameters name its experiment (``experiment = "..."``) keeps using it."""
    if isinstance(params.get("experiment"), str):
        return str(params["experiment"])
    with contextlib.suppress(Exception):
        for spec in inspect_parameters(source) or []:
            if spec.name == "experiment":
                value = _literal(spec.default)
                if isinstance(value, str):
                    return value
    return None
