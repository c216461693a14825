"""What the magics leave in a notebook: rich output that survives save and restart, ``--help`` that
succeeds, a quiet first start, progress while a model is captured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nb2prod.magics import SUBCOMMANDS
from tests.helpers import make_notebook, run_notebook


def magic(ip: Any, line: str) -> Any:
    return ip.run_line_magic("nb2prod", line)


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_help_prints_once_and_succeeds(ip: Any, capsys: Any, sub: str) -> None:
    assert magic(ip, f"{sub} --help") is None
    captured = capsys.readouterr()
    assert captured.out.count(f"usage: %nb2prod {sub}") == 1
    assert "options:" in captured.out and captured.err == ""


def test_top_level_help_lists_every_subcommand(ip: Any, capsys: Any) -> None:
    magic(ip, "--help")
    out = capsys.readouterr().out
    assert all(f"%nb2prod {sub}" in out for sub in SUBCOMMANDS)


def test_first_start_on_a_new_store_is_quiet(
    ip: Any, project: Path, capfd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{project / 'fresh.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    capfd.readouterr()
    magic(ip, "start unit")
    captured = capfd.readouterr()
    assert (project / "fresh.db").exists() and "fresh.db" in captured.out
    assert "Creating initial MLflow database tables" not in captured.err
    assert "Updating database tables" not in captured.err
    assert "INFO" not in captured.err


@pytest.mark.slow
def test_saved_notebook_keeps_status_as_html_and_text(project: Path) -> None:
    """Executed in a real kernel, saved, read back as a fresh JupyterLab would after a restart."""
    import nbformat

    path = make_notebook(
        project / "saved.ipynb",
        [
            "%load_ext nb2prod",
            "%nb2prod start unit",
            "%nb2prod data --help",
            "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3], 'target': [0, 1, 0]})",
            "%nb2prod data df --target target",
            "from sklearn.linear_model import LogisticRegression\n"
            "clf = LogisticRegression().fit(df[['a']], df.target)",
            "%nb2prod model clf",
            "%nb2prod status",
        ],
    )
    nb = run_notebook(path, project)
    nbformat.write(nb, str(path))
    saved = nbformat.read(str(path), as_version=4)
    start, helped, _, data, _, model, status = saved.cells[1:]

    def bundles(cell: Any) -> list[dict[str, Any]]:
        return [o["data"] for o in cell.outputs if o["output_type"] in ("display_data", "execute_result")]

    (status_bundle,) = bundles(status)
    assert "application/vnd.jupyter.widget-view+json" not in status_bundle
    page, plain = status_bundle["text/html"], status_bundle["text/plain"]
    assert "nb2prod-output" in page and "Environment" in page and "Data (1)" in page
    assert "Models (1)" in page and "models:/clf/1" in page and ">train</th>" in page
    assert ">df</td>" in page and "xxh3_128:" in page and "<style" not in page
    assert plain.startswith("run ") and "df" in plain
    run_id = plain.split()[1]
    assert run_id in page
    (start_bundle,) = bundles(start)
    assert run_id in start_bundle["text/html"] and run_id in start_bundle["text/plain"]
    (data_bundle,) = bundles(data)
    assert "text/html" in data_bundle and "dataset 'df'" in data_bundle["text/plain"]
    # %nb2prod model: its progress output was replaced by the result, saved as HTML and text
    (model_bundle,) = bundles(model)
    assert "registered" in model_bundle["text/html"] and ">metric</th>" in model_bundle["text/html"]
    assert "…" not in model_bundle["text/html"]
    assert model_bundle["text/plain"].startswith("nb2prod: registered models:/clf/1")
    # --help: printed once, no error output (Run All goes on)
    assert [o["output_type"] for o in helped.outputs] == ["stream"]
    assert helped.outputs[0]["name"] == "stdout"
    assert helped.outputs[0]["text"].count("usage: %nb2prod data") == 1
