"""The layering, read from the source with ``ast`` (nothing is imported).

* ``nb2prod/serving/`` imports nothing from the rest of nb2prod: it is copied into every
  Bento as ``_nb2prod_serving`` and runs where nb2prod is not installed.
* Only ``nb2prod/cli/`` imports click: the core returns data, the CLI is a shell over it.
* Only the IPython layer imports IPython: the magics (``magics.py``), the notebook widgets
  (``widgets.py``, which also alone import ipywidgets) and the capture session's lookup
  of the running shell (``session/state.py``, ``get_ipython``), which is how a plain
  ``nb2prod.start()`` in a notebook finds the cells it captures.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nb2prod"

IPYTHON_ALLOWED = {"magics.py", "widgets.py", "session/state.py"}
IPYWIDGETS_ALLOWED = {"widgets.py"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _package_of(rel: str) -> list[str]:
    """``nb2prod.<...>`` package parts of the module at ``rel`` (for relative imports)."""
    parts = ["nb2prod", *rel.removesuffix(".py").split("/")]
    return parts[:-1]


def imports(rel: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the module, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(rel)[: len(_package_of(rel)) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            else:
                yield node.lineno, node.module or ""


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_reader_resolves_relative_imports() -> None:
    tree = ast.parse(
        "from . import drift\nfrom .store import Store\nfrom .. import config\nimport click.core"
    )
    found = [name for _, name in imports("serving/x.py", tree)]
    assert found == ["nb2prod.serving", "nb2prod.serving.store", "nb2prod", "click.core"]


def test_serving_imports_nothing_else_of_nb2prod() -> None:
    bad = [
        f"nb2prod/{rel}:{line} imports {name}"
        for rel, tree in _modules()
        if rel.startswith("serving/")
        for line, name in imports(rel, tree)
        if _top(name) == "nb2prod" and not (name == "nb2prod.serving" or name.startswith("nb2prod.serving."))
    ]
    assert not bad, "\n".join(bad)


def test_only_the_cli_imports_click() -> None:
    bad = [
        f"nb2prod/{rel}:{line} imports {name}"
        for rel, tree in _modules()
        if not rel.startswith("cli/")
        for line, name in imports(rel, tree)
        if _top(name) == "click"
    ]
    assert not bad, "\n".join(bad)


def test_only_the_ipython_layer_imports_ipython() -> None:
    bad = [
        f"nb2prod/{rel}:{line} imports {name}"
        for rel, tree in _modules()
        for line, name in imports(rel, tree)
        if (_top(name) == "IPython" and rel not in IPYTHON_ALLOWED)
        or (_top(name) == "ipywidgets" and rel not in IPYWIDGETS_ALLOWED)
    ]
    assert not bad, "\n".join(bad)
