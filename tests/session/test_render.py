"""What a notebook user reads: the texts and panel rows of :mod:`nb2prod.render.notebook`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nb2prod.render import notebook as render


def _env(commit: str | None = "0123456789abcdef0123", notebook: Any = None) -> Any:
    git = SimpleNamespace(commit=commit, branch="main", dirty=True)
    return SimpleNamespace(
        python_implementation="CPython",
        python_version="3.11.9",
        system="Linux",
        machine="x86_64",
        distributions={"numpy": "2.0", "pandas": "2.2"},
        imported={"numpy": "2.0"},
        git=git,
        notebook=notebook,
        digest="sha256:" + "a" * 64,
    )


def _diff(lines: list[str]) -> Any:
    return SimpleNamespace(is_empty=not lines, summary=lambda: list(lines))


def test_environment_rows_and_lines_say_the_same() -> None:
    env = _env(
        notebook=SimpleNamespace(path="/p/train.ipynb", n_code_cells=7, code_digest="sha256:" + "b" * 64)
    )
    rows = render.environment_rows(env)
    assert [label for label, _ in rows] == ["python", "packages", "git", "notebook", "env digest"]
    assert dict(rows)["git"] == "0123456789ab on main (dirty)"
    assert dict(rows)["notebook"] == "/p/train.ipynb, 7 code cells, sha256:bbbbbbbbbbbb"
    lines = render.environment_lines(env)
    assert lines[0] == "python     CPython 3.11.9 on Linux x86_64"
    assert lines[4] == "env digest sha256:aaaaaaaaaaaa"
    assert all(line[11:] == value for line, (_, value) in zip(lines, rows, strict=True))


def test_a_repository_without_commits_renders() -> None:
    assert dict(render.environment_rows(_env(commit=None)))["git"] == "no commit yet on main (dirty)"


def test_diff_lines_for_each_case() -> None:
    assert render.diff_lines(None, None) == ["changes    first recorded run of this notebook"]
    assert render.diff_lines(None, "r1") == ["changes    previous run r1 has no environment record"]
    assert render.diff_lines(_diff([]), "r1") == ["changes    none since run r1"]
    assert render.diff_lines(_diff(["numpy 1.26 -> 2.0"]), "r1") == [
        "changes    since run r1:",
        "  numpy 1.26 -> 2.0",
    ]
    assert render.diff_row(_diff(["x"]), "r1") == ("changes", "since run r1:")


def test_end_and_export_texts() -> None:
    assert render.end_text("abc") == "nb2prod: run abc ended"
    assert render.end_text(None) == "nb2prod: no capture session was open"
    result = SimpleNamespace(
        tag="churn:v3",
        built=False,
        versions=("3", "2"),
        model_version="3",
        source_dir=Path("bentos/churn"),
        name="churn",
    )
    assert render.export_text(result).splitlines() == [
        "nb2prod: churn:v3 already built (no change); carries v3, v2",
        "nb2prod: service source in bentos/churn; serve it with: nb2prod serve churn",
    ]


def test_metrics_text_is_sorted_with_four_digits() -> None:
    assert render.metrics_text({"test_accuracy": 0.912345, "training_accuracy": 1.0}) == (
        "test_accuracy=0.9123, training_accuracy=1"
    )


def test_status_panel_lays_out_the_same_rows() -> None:
    from nb2prod.widgets import status_panel

    report = SimpleNamespace(
        run_id="r2",
        experiment="unit",
        tracking_uri="sqlite:///x.db",
        environment=_env(),
        previous_run_id="r1",
        diff=_diff(["numpy 1.26 -> 2.0"]),
        datasets=[],
        models=[],
        not_recorded=["dataset 'again'"],
    )
    tab = status_panel(report)  # type: ignore[arg-type]
    run_html, env_html = tab.children[0].value, tab.children[1].value
    assert "dataset &#x27;again&#x27;" in run_html
    assert ">env digest</th>" in env_html and "white-space:nowrap" in env_html
    assert "since run r1:" in env_html and "numpy 1.26 -&gt; 2.0" in env_html
    assert [tab.get_title(i) for i in range(4)] == ["Run", "Environment", "Data (0)", "Models (0)"]


def _model(metrics: dict[str, float]) -> Any:
    return SimpleNamespace(
        name="churn",
        version="2",
        model_uri="models:/churn/2",
        model_id="m-abc",
        run_id="r2",
        info=SimpleNamespace(class_name="sklearn.linear_model.LogisticRegression", flavor="sklearn"),
        metrics=metrics,
        data_digests={"X": "xxh3_128:1", "dataset:train": "xxh3_128:1"},
        artifact_sha256={"MLmodel": "sha256:0"},
        roundtrip=SimpleNamespace(rows=200, seconds=1.25),
        identical_to=None,
        registered=True,
        champion=False,
    )


def test_metrics_are_a_train_versus_test_table() -> None:
    from nb2prod.render.notebook_html import metrics_rows

    rows = metrics_rows({"training_accuracy": 1.0, "test_accuracy": 0.912345, "training_roc_auc": 0.99})
    assert rows == [["accuracy", "1", "0.9123"], ["roc_auc", "0.99", "-"]]


def test_status_html_is_left_aligned_with_metrics_uris_and_aliases() -> None:
    from nb2prod.render.notebook_html import status_shown

    report = SimpleNamespace(
        run_id="r2",
        experiment="unit",
        tracking_uri="http://***@mlflow.local:5000",
        environment=_env(),
        previous_run_id=None,
        diff=None,
        datasets=[],
        models=[_model({"training_accuracy": 1.0, "test_accuracy": 0.9})],
        not_recorded=[],
    )
    shown = status_shown(
        report,  # type: ignore[arg-type]
        {"models:/churn/2": ["champion"]},
        experiment_id="7",
        bentos={"models:/churn/2": "churn:v2-abc (carries v2, v1)"},
    )
    bundle = shown._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"} and "models:/churn/2" in bundle["text/plain"]
    page = bundle["text/html"]
    assert "text-align:right" not in page and page.count("text-align:left") > 10
    assert "<th style=" in page and ">train</th>" in page and ">test</th>" in page
    assert "@champion" in page and "m-abc" in page
    assert ">bento</th>" in page and "churn:v2-abc (carries v2, v1)" in page
    # the UI links drop the credentials
    assert 'href="http://mlflow.local:5000/#/models/churn/versions/2"' in page
    assert 'href="http://mlflow.local:5000/#/experiments/7/runs/r2"' in page
    assert "<style" not in page  # inline styles only: a <style> restyles the whole notebook page


def test_no_ui_link_for_a_database_store() -> None:
    from nb2prod.render.notebook_html import ui_base

    assert ui_base("sqlite:///x/mlflow.db") is None
    assert ui_base("https://u:p@host/mlflow/") == "https://host/mlflow"


def test_git_state_names_the_files_that_make_it_dirty() -> None:
    env = _env()
    env.git.dirty_files = ("a.py", "b.py", "c.py", "d.py", "e.py", "f.py", "g.py")
    assert dict(render.environment_rows(env))["git"] == (
        "0123456789ab on main (dirty: a.py, b.py, c.py, d.py, e.py and 2 more)"
    )
    env.git.dirty, env.git.dirty_files = False, ()
    assert dict(render.environment_rows(env))["git"] == "0123456789ab on main (clean)"


def test_export_shows_html_with_readable_text() -> None:
    from nb2prod.export import ExportResult
    from nb2prod.render.notebook_html import export_shown

    result = ExportResult(
        tag="churn:v3-abc",
        name="churn",
        model_version="3",
        alias="champion",
        source_dir=Path("bentos/churn"),
        bentoml_home=Path(".nb2prod/bentoml"),
        model_tag="churn:v3",
        built=True,
        archive=None,
        seconds=1.0,
        versions=("3", "2"),
    )
    bundle = export_shown(result)._repr_mimebundle_()
    assert bundle["text/plain"].splitlines() == [
        "nb2prod: churn:v3-abc built; carries v3, v2",
        "nb2prod: service source in bentos/churn; serve it with: nb2prod serve churn",
    ]
    page = bundle["text/html"]
    assert "nb2prod-output" in page and "<code>churn:v3-abc</code> built" in page
    assert ">carries</th>" in page and "v3, v2" in page and "nb2prod serve churn" in page


def test_model_headline_says_champion_identical_or_skipped() -> None:
    first = SimpleNamespace(
        **{**vars(_model({})), "version": "1", "model_uri": "models:/churn/1", "champion": True}
    )
    assert render.model_text(first).splitlines()[0] == (  # type: ignore[arg-type]
        "nb2prod: registered models:/churn/1 (sklearn.linear_model.LogisticRegression, flavor sklearn); "
        "it is churn@champion (first version)"
    )
    again = SimpleNamespace(**{**vars(_model({})), "identical_to": "1"})
    lines = render.model_text(again).splitlines()  # type: ignore[arg-type]
    assert lines[0].startswith("nb2prod: registered models:/churn/2")
    assert lines[1].startswith("  identical   to version 1 (same code, data and metrics)")
    assert "--skip-identical" in lines[1]
    skipped = SimpleNamespace(
        **{
            **vars(_model({})),
            "identical_to": "1",
            "version": None,
            "model_uri": "models:/m-abc",
            "registered": False,
        }
    )
    assert render.model_text(skipped).startswith(  # type: ignore[arg-type]
        "nb2prod: not registered: identical to churn version 1 (same code, data and metrics); logged as models:/m-abc"
    )
