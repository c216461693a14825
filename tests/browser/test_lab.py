"""JupyterLab in a real browser: the nb2prod panel end to end (issue 14), and report output
that leaves the page's own styles alone (issue 15).

One ``jupyter lab`` (127.0.0.1, token) and one run of Debian's chromium, driven by
``playwright-core`` (tests/browser/lab.mjs), for the module. Screenshots of every step are
kept under the module's tmp output (the path is printed). Skipped locally with the reason
when node, chromium or the built panel is missing; with ``CI=true`` that fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jupyter.captures import NOTEBOOK, TINY, TINY_MODEL
from tests.jupyter.servers import LABEXTENSION, REPO, Server, jupyter, lab_extensions_dir, require
from tests.served import Capture, CapturedProject

pytestmark = pytest.mark.slow

# its own project: the REST tests (same worker under --dist loadfile) promote and re-run TINY's
CAPTURE = Capture(key="tiny-browser", run=TINY.run)
HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
UNSCOPED = (
    "<style>h2 { text-decoration: underline; border-bottom: 3px solid red; }"
    " body { max-width: 700px; }</style><p>an unscoped style</p>"
)


def _node() -> str:
    node = shutil.which("node")
    require(node is not None, "node is not installed (the browser tests drive chromium from node)")
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    require((major, minor) >= (18, 0), f"node {version} is too old for playwright-core (18 or newer)")
    return node


def _playwright(node: str) -> None:
    if (HERE / "node_modules" / "playwright-core" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    require(npm is not None, "npm is not installed: cannot install playwright-core for the browser tests")
    assert npm is not None
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"npm ci of tests/browser failed: {done.stderr[-2000:]}"


def _style_notebooks(folder: Path) -> dict[str, str]:
    """The example notebook three ways: as is, with a saved drift report, with an unscoped style.

    The report is what ``%nb2prod monitor`` displays (``render_notebook_html`` of a report
    with drift), saved as the cell's output like an executed notebook keeps it.
    """
    import tempfile

    import nbformat

    from nb2prod.monitoring.report import build_report
    from nb2prod.render.report_notebook import render_notebook_html
    from tests.monitoring.stores import T0, breast_cancer, shifted_store

    data = breast_cancer()
    with tempfile.TemporaryDirectory() as tmp:
        shifted_store(str(Path(tmp) / "p.db"), data)
        report = build_report(str(Path(tmp) / "p.db"), data["manifest"], until=T0 + 10_800, now=T0 + 10_800)
    fragment = render_notebook_html(report)
    assert report.status == "drift"

    example = nbformat.read(str(REPO / "notebooks" / "train.ipynb"), as_version=4)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, html in (("plain", None), ("report", fragment), ("unscoped", UNSCOPED)):
        nb = nbformat.from_dict(json.loads(json.dumps(example)))
        cells = [nb.cells[0], nbformat.v4.new_markdown_cell("## Results\n\nWhat production saw.")]
        if html is not None:
            cell = nbformat.v4.new_code_cell("%nb2prod monitor breast-cancer")
            cell.outputs = [
                nbformat.v4.new_output(
                    "display_data", data={"text/html": html, "text/plain": "nb2prod monitor report"}
                )
            ]
            cells.append(cell)
        nb.cells = cells + nb.cells[1:]
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, str(path))
        paths[name] = path
    return {k: str(p) for k, p in paths.items()}


@pytest.fixture(scope="module")
def lab(captured_project: CapturedProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing (apt-get install chromium)")
    require(
        (LABEXTENSION / "package.json").is_file(),
        "the panel is not built (make setup builds nb2prod/jupyter/labextension)",
    )
    _playwright(_node())
    root = tmp_path_factory.mktemp("lab")
    env = captured_project.env(JUPYTER_DATA_DIR=str(root / "data"))
    extra = (
        f"--LabApp.extra_labextensions_path={lab_extensions_dir(root)}",
        f"--LabApp.user_settings_dir={root / 'settings'}",
        f"--LabApp.workspaces_dir={root / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    )
    with jupyter("lab", captured_project.home, env, root / "lab.log", extra=extra) as server:
        server.env = env  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def seen(
    lab: Server, captured_project: CapturedProject, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One chromium run through both scenarios; what it saw (screenshots under ``out``)."""
    out = tmp_path_factory.mktemp("lab-screenshots")
    styles = _style_notebooks(captured_project.home / "styles")
    jupyter_exe = str(Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "jupyter")
    trust = shutil.which("jupyter", path=str(Path(__import__("sys").executable).parent)) or jupyter_exe
    env: dict[str, str] = lab.env  # type: ignore[attr-defined]
    subprocess.run([trust, "trust", *styles.values()], env=env, check=True, capture_output=True, timeout=60)
    return _drive(
        lab,
        out,
        {
            "scenarios": ["styles", "panel"],
            "notebook": NOTEBOOK,
            "notebooks": {k: str(Path(v).relative_to(captured_project.home)) for k, v in styles.items()},
        },
    )


def _drive(lab: Server, out: Path, scenario: dict[str, Any]) -> dict[str, Any]:
    """Run lab.mjs once (its own chromium) with ``scenario``; what it saw, failing on a failed step."""
    config = {"url": lab.url, "token": lab.token, "out": str(out), "chromium": str(CHROMIUM), **scenario}
    config_path = out / "config.json"
    config_path.write_text(json.dumps(config))
    done = subprocess.run(
        [_node(), str(HERE / "lab.mjs"), str(config_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=HERE,
    )
    print(f"screenshots: {out}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"lab.mjs printed nothing (exit {done.returncode}): {done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["out"] = str(out)
    (out / "seen.json").write_text(json.dumps(result, indent=1))
    assert done.returncode == 0, (
        f"browser step failed: {result.get('failed_step')}: {result.get('error')}\n"
        f"panel: {result.get('panel_text')}\nscreenshots: {out}\nlab log: {lab.log_text()[-2000:]}"
    )
    return result


def test_report_output_keeps_the_page_styles(seen: dict[str, Any]) -> None:
    styles = seen["styles"]
    assert styles["report"]["output_html"] >= 1 and styles["unscoped"]["output_html"] >= 1
    # the drift report beside a user's heading: heading and page exactly as without it
    assert styles["report"]["heading"] == styles["plain"]["heading"]
    assert styles["report"]["body"] == styles["plain"]["body"]
    # the same check sees an unscoped style (what the report shipped before issue 15)
    assert styles["unscoped"]["heading"]["textDecorationLine"] == "underline"
    assert styles["unscoped"]["body"]["maxWidth"] == "700px" != styles["plain"]["body"]["maxWidth"]


def test_panel_shows_runs_and_models_and_acts(
    seen: dict[str, Any], captured_project: CapturedProject
) -> None:
    import mlflow

    run_id = captured_project.data["run"].run_id
    # first paint: the notebook's run and its model version
    (run,) = seen["runs_before"]
    assert run.startswith(run_id[:8]) and "FINISHED" in run and "C=0.5" in run
    assert seen["versions_before"] == ["1"]
    assert seen["paint_ms"] > 0
    # re-run from the parameters form: a second run, version 2
    assert seen["rerun"]["status"] == "done", seen["rerun"]
    assert len(seen["runs_after_rerun"]) == 2 and "C=2.0" in seen["runs_after_rerun"][0]
    # export: the Bento of version 2 appears on its row
    assert seen["export"]["status"] == "done", seen["export"]
    assert seen["bentos_v2"].startswith(f"{TINY_MODEL}:v2-"), seen["bentos_v2"]
    # promote: the alias timeline moves (newest first) and v2 carries the champion alias
    assert seen["promote"]["status"] == "done", seen["promote"]
    assert len(seen["timeline_after"]) == len(seen["timeline_before"]) + 1
    assert "champion:" in seen["timeline_after"][0] and "→ 2" in seen["timeline_after"][0]
    assert "promoted in JupyterLab" in seen["timeline_after"][0]
    assert "champion" in seen["aliases_v2"]
    assert seen["promote_button_on_champion"] is False
    # rollback: refused with nb2prod's message and fix when v2 replaced no champion, else back to v1
    if any("champion:" in move for move in seen["timeline_before"]):
        assert seen["rollback"]["status"] == "done", seen["rollback"]
        expected_champion = "1"
    else:
        assert seen["rollback"]["status"] == "failed", seen["rollback"]
        assert seen["rollback_error"] == [
            f"nb2prod: the history of {TINY_MODEL}@champion has no version before 2",
            f"fix: name one: nb2prod rollback {TINY_MODEL} --to VERSION",
        ], seen["rollback_error"]
        expected_champion = "2"
    client = mlflow.MlflowClient(captured_project.tracking_uri, captured_project.tracking_uri)
    assert str(client.get_model_version_by_alias(TINY_MODEL, "champion").version) == expected_champion
    for name in ("01-panel", "02-rerun", "03-exported", "04-promoted", "05-rollback-refused"):
        assert (Path(seen["out"]) / f"{name}.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def seen_services(
    seen: dict[str, Any],
    lab: Server,
    captured_project: CapturedProject,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """After the panel scenario (which exported a Bento): ``nb2prod serve`` of the model with 60
    rows whose feature ``a`` moved, then the services scenario in a second chromium run."""
    import urllib.request

    import pandas as pd

    from tests.served import free_port, serving

    out = tmp_path_factory.mktemp("lab-services")
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    argv = [sys.executable, "-m", "nb2prod", "serve", TINY_MODEL, "--port", str(free_port())]
    with serving(argv, captured_project.env(), out / "serve.log", cwd=captured_project.home) as service:
        train = pd.read_csv(captured_project.home / "notebooks" / "data.csv").iloc[:60]
        rows = [{"a": float(a + 5), "b": float(b)} for a, b in zip(train.a, train.b, strict=True)]
        status, raw, _ = service.post("/predict", json.dumps(rows).encode(), headers={"X-Request-ID": "lab"})
        assert status == 200, raw
        deadline = time.monotonic() + 30
        while True:  # the service logs off the request path: its drift needs the 60 rows
            with urllib.request.urlopen(service.url + "/drift", timeout=10) as response:
                drift = json.loads(response.read())
            if drift["status"] != "insufficient_data":
                break
            assert time.monotonic() < deadline, drift
            time.sleep(0.5)
        # the true labels of ten of them (rows of a list are "<X-Request-ID>-<i>")
        labels = [{"request_id": f"lab-{i}", "label": int(train.label[i])} for i in range(10)]
        status, stored = service.request("/feedback", {"labels": labels})
        assert status == 200 and stored["stored"] == 10, stored
        result = _drive(
            lab,
            out,
            {
                "scenarios": ["services"],
                "notebook": NOTEBOOK,
                "service_url": service.url,
                "unreachable_url": unreachable,
            },
        )
    result.update(service_url=service.url, unreachable_url=unreachable)
    return result


def test_panel_shows_services_adds_one_and_opens_the_drift_report(seen_services: dict[str, Any]) -> None:
    seen = seen_services
    # the served model: its drift verdict, the moved feature first and marked
    assert seen["service"].startswith(f"{TINY_MODEL} {seen['service_url']}"), seen["service"]
    assert "· 6 req/min" in seen["service"]  # 60 rows over the last 10 minutes
    assert seen["service_drift"] == "drift: drift"
    assert seen["service_features"][0].startswith("a: PSI ") and seen["service_features"][0].endswith(
        "(drifted)"
    )
    assert seen["service_drifted"] == [seen["service_features"][0]]
    assert [f.split(":")[0] for f in seen["service_features"]] == ["a", "b"]
    # live quality from the ten labels sent as feedback, with how many there are
    assert re.search(r"live quality: accuracy=[0-9.]+ f1_macro=[0-9.]+ \(10 labelled\)$", seen["service"]), (
        seen["service"]
    )
    # added by URL: listed, and it says it does not answer
    (unreachable,) = seen["unreachable"]
    assert unreachable.startswith(f"{seen['unreachable_url']}: not reachable (") and len(unreachable) > 40
    assert seen["services_after_add"] >= 2
    # the drift report: a tab of its own, sandboxed, with the verdict and the moved feature
    assert seen["report_tab"] == f"Drift: {TINY_MODEL}"
    assert seen["report_sandbox"] == ""
    text = seen["report_text"]
    assert "nb2prod monitor" in text and "DRIFT" in text and "Drifted: a" in text, text
    for name in ("06-services", "07-service-added", "08-drift-report"):
        assert (Path(seen["out"]) / f"{name}.png").stat().st_size > 10_000
