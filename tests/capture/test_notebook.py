"""The notebook's code identity: code-cell digest and the imports read from its cells."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from nb2prod.capture.environment import snapshot
from nb2prod.capture.notebook import code_digest, imports_in_code, scan_imports
from nb2prod.exceptions import UsageError
from tests.capture.environments import code, markdown, write_notebook

# --------------------------------------------------------------------------- imports in code


def test_imports_in_code_plain_and_from() -> None:
    cells = [
        "import numpy as np, pandas\nimport os.path\n",
        "from sklearn.ensemble import RandomForestClassifier\nfrom collections import abc",
        "def f():\n    import scipy.stats\n    return 1\n",
        "try:\n    import xgboost\nexcept ImportError:\n    pass\n",
    ]
    assert imports_in_code(cells) == {"numpy", "pandas", "os", "sklearn", "collections", "scipy", "xgboost"}


def test_imports_in_code_relative_imports_ignored() -> None:
    assert imports_in_code(["from . import helpers\nfrom .utils import x\nfrom ..pkg import y"]) == set()


def test_imports_in_code_blanks_ipython_syntax() -> None:
    cells = [
        "%matplotlib inline\nimport matplotlib.pyplot as plt",
        "!pip install requests\nimport requests",
        "files = !ls\nout = %sx echo hi\nimport yaml",
        "np.array?\n??plt\nimport json",
        "for i in range(3):\n    %time f(i)\nimport toml",
        "%%time\nimport polars\n",
        "%load_ext nb2prod",
    ]
    scan = scan_imports(cells)
    assert scan.modules == {"matplotlib", "requests", "yaml", "json", "toml", "polars"}
    assert scan.unparsed_cells == ()


def test_imports_in_code_skips_and_counts_unparsable_cells() -> None:
    cells = [
        "import numpy",
        "def broken(:\n    import pandas",
        "%%bash\nimport this is shell\necho $HOME",
        ["import ", "scipy\n"],  # nbformat list-of-lines form
    ]
    scan = scan_imports(cells)  # type: ignore[arg-type]
    assert scan.modules == {"numpy", "scipy"}
    assert scan.unparsed_cells == (1, 2)
    assert imports_in_code(cells) == {"numpy", "scipy"}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- notebook code digest


def test_notebook_digest_from_file(tmp_path: Path) -> None:
    base = [markdown("# Title"), code("import json\nx = 1", count=1), code("y = x + 1")]
    nb = write_notebook(tmp_path / "a.ipynb", base)
    snap = snapshot(notebook_path=nb)
    info = snap.notebook
    assert info is not None
    assert info.source == "file" and info.path == str(nb.resolve()) and info.n_code_cells == 2
    assert info.code_digest.startswith("sha256:")
    assert snap.imported == {}  # json is stdlib

    # Outputs, execution counts, markdown, CRLF, trailing whitespace, list form: same code.
    noisy = [
        markdown("# Other title"),
        code(
            ["import json   \r\n", "x = 1\t\r\n", "\n"],
            outputs=[{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}],
            count=7,
        ),
        markdown("more prose"),
        code("y = x + 1\n\n"),
        code(""),
    ]
    noisy_nb = write_notebook(tmp_path / "b.ipynb", noisy)
    assert snapshot(notebook_path=noisy_nb).notebook.code_digest == info.code_digest  # type: ignore[union-attr]

    changed = write_notebook(tmp_path / "c.ipynb", [*base[:2], code("y = x + 2")])
    assert snapshot(notebook_path=changed).notebook.code_digest != info.code_digest  # type: ignore[union-attr]

    # Moving a cell boundary changes the code's identity too.
    merged = write_notebook(tmp_path / "d.ipynb", [code("import json\nx = 1\ny = x + 1")])
    assert snapshot(notebook_path=merged).notebook.code_digest != info.code_digest  # type: ignore[union-attr]

    # The kernel's history gives the same digest for the same code.
    history = snapshot(code_cells=["import json\nx = 1\n", "y = x + 1"]).notebook
    assert history is not None and history.source == "history" and history.path is None
    assert history.code_digest == info.code_digest


def test_notebook_imports_are_recorded(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "n.ipynb", [code("%load_ext nb2prod\nimport pytest"), code("def oops(:")])
    snap = snapshot(notebook_path=nb)
    assert snap.imported == {"pytest": metadata.version("pytest")}
    assert snap.notebook is not None and snap.notebook.unparsed_cells == 1


def test_code_digest_is_unambiguous() -> None:
    assert code_digest(["a", "b"]) != code_digest(["a\nb"])
    assert code_digest(["a", "b"]) != code_digest(["b", "a"])
    assert code_digest(["a", "", "  \n", "b"]) == code_digest(["a", "b"])
    assert code_digest(["a", "b"])[1] == 2


def test_missing_or_invalid_notebook_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ipynb"
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        snapshot(notebook_path=missing)
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match=re.escape(str(bad))):
        snapshot(notebook_path=bad)
    wrong = tmp_path / "wrong.ipynb"
    wrong.write_text("[1, 2]")
    with pytest.raises(UsageError, match=re.escape(str(wrong))):
        snapshot(notebook_path=wrong)
