"""nb2prod run: one tracked run per notebook execution on a real kernel and a real MLflow store;
every failure is one error naming the cell; the pre-flight environment check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nb2prod.exceptions import PreflightError
from nb2prod.execute import run_notebook
from nb2prod.tracking import names
from tests.execute.runs import artifacts, cli, fake_baseline, runs


def test_help_documents_exit_codes() -> None:
    out = cli("run", "--help").stdout
    for code in ("0 ", "2 ", "3 ", "4 ", "5 ", "130"):
        assert code in out
    assert "kernel died" in out and "--timeout" in out
    assert "not reproduced" in cli("reproduce", "--help").stdout
    assert "some runs failed" in cli("sweep", "--help").stdout


@pytest.mark.slow
def test_run_is_one_tracked_run_with_artifacts_and_a_link_to_the_previous(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    first = run_notebook(nb, {"x": "2", "n": "4"}, progress=False)
    assert first.ok, first.error
    assert first.parameters == {"x": 2.0, "n": 4}
    assert first.metrics == {"test_score": 8.0}
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"x": "2.0", "n": "4"}
    tags = run.data.tags
    assert tags["nb2prod.kind"] == "run"
    assert tags["nb2prod.notebook"] == str(nb)
    # The kernel's %nb2prod start attached to the runner's run: one run, environment captured in it.
    assert tags["nb2prod.notebook_digest"] == tags["nb2prod.source_digest"]
    assert len(runs(client)) == 1
    files = artifacts(client, first.run_id)
    assert {
        names.SOURCE_ARTIFACT,
        names.EXECUTED_ARTIFACT,
        names.HTML_ARTIFACT,
        names.PARAMS_ARTIFACT,
        "environment.json",
    } <= files
    executed = nbformat.read(str(first.executed_path), as_version=4)
    assert "float int bool a" in executed.cells[-1].outputs[0]["text"]
    assert "injected-parameters" in executed.cells[1].metadata.tags

    second = run_notebook(nb, {}, progress=False)
    assert second.ok
    assert client.get_run(second.run_id).data.tags["nb2prod.reexecutes"] == first.run_id
    assert second.preflight.against_run_id == first.run_id
    assert second.preflight.diff is not None and not second.preflight.blocking


@pytest.mark.slow
def test_cell_error_fails_the_run_keeps_the_partial_notebook_and_registers_nothing(
    nbs: Path, client: Any
) -> None:
    proc = cli("run", str(nbs / "raises.ipynb"), "--no-progress")
    assert proc.returncode == 3, proc.stderr
    assert "the notebook failed in cell 3" in proc.stderr
    assert "ValueError: boom" in proc.stderr
    assert "marked FAILED" in proc.stderr
    (run,) = runs(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["nb2prod.failure.kind"] == "cell"
    files = artifacts(client, run.info.run_id)
    assert {names.EXECUTED_ARTIFACT, names.HTML_ARTIFACT, "registry/should-not-exist.json"} <= files
    local = client.download_artifacts(run.info.run_id, names.EXECUTED_ARTIFACT, dst_path=str(nbs))
    executed = nbformat.read(local, as_version=4)
    errors = [
        o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert [e.ename for e in errors] == ["ValueError"]
    assert not any("never" in str(c.outputs) for c in executed.cells if c.cell_type == "code")
    assert client.search_registered_models() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("notebook", "kind", "cell", "ename"),
    [
        ("dies.ipynb", "dead_kernel", 1, "DeadKernelError"),
        ("interrupts.ipynb", "cell", 1, "KeyboardInterrupt"),
        ("sysexit1.ipynb", "cell", 1, "SystemExit"),
        ("broken1.ipynb", "cell", 6, "AssertionError"),
    ],
)
def test_every_failure_is_one_error_naming_the_cell(
    nbs: Path, client: Any, notebook: str, kind: str, cell: int, ename: str
) -> None:
    result = run_notebook(nbs / notebook, progress=False)
    assert not result.ok and result.status == "FAILED"
    error = result.error
    assert error is not None
    assert (error.kind, error.cell_index, error.ename) == (kind, cell, ename)
    assert f"cell {cell}" in error.message
    assert error.run_id == result.run_id
    assert client.get_run(result.run_id).info.status == "FAILED"
    assert names.EXECUTED_ARTIFACT in artifacts(client, result.run_id)
    source = nbformat.read(str(nbs / notebook), as_version=4)
    assert source.cells[cell].cell_type == "code"


@pytest.mark.slow
def test_timeout_fails_with_exit_code_5(nbs: Path, client: Any) -> None:
    # The cell sleeps 60 s: the run stopped at the 3 s timeout (a timing of it is not asserted here).
    proc = cli("run", str(nbs / "slow.ipynb"), "--timeout", "3", "--no-progress")
    assert proc.returncode == 5, proc.stderr
    assert "cell 1" in proc.stderr and "timeout" in proc.stderr
    (run,) = runs(client)
    assert run.info.status == "FAILED" and run.data.tags["nb2prod.failure.kind"] == "timeout"
    local = client.download_artifacts(run.info.run_id, names.EXECUTED_ARTIFACT, dst_path=str(nbs))
    executed = nbformat.read(local, as_version=4)
    assert "start" in str(executed.cells[0].outputs)
    assert not any("never" in str(c.outputs) for c in executed.cells if c.cell_type == "code")


@pytest.mark.slow
def test_systemexit_zero_is_success(nbs: Path) -> None:
    result = run_notebook(nbs / "sysexit0.ipynb", progress=False)
    assert result.ok, result.error


@pytest.mark.slow
def test_ctrl_c_of_the_runner_marks_the_run_failed(nbs: Path, client: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nb2prod", "run", str(nbs / "keyboard_interrupt.ipynb"), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not runs(client):
        time.sleep(0.5)
    time.sleep(4)  # into the sleep(60) cell
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (run,) = runs(client)
    assert run.info.status == "FAILED" and run.data.tags["nb2prod.failure.kind"] == "interrupted"


def test_strict_refuses_before_anything_runs_when_an_imported_package_differs(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    baseline = fake_baseline(client, nb, {"mlflow": "0.0.1"})
    with pytest.raises(PreflightError, match=r"mlflow 0\.0\.1 → .*\(upgraded\)"):
        run_notebook(nb, strict=True, against=baseline, progress=False)
    assert len(runs(client)) == 1  # only the baseline: no run was opened


@pytest.mark.slow
def test_non_strict_run_records_the_difference(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    baseline = fake_baseline(client, nb, {"mlflow": "0.0.1", "some-unrelated-dist": "1.0"})
    result = run_notebook(nb, progress=False)  # the last run of this notebook is the baseline
    assert result.ok
    assert result.preflight.against_run_id == baseline
    assert any(line.startswith("mlflow 0.0.1") for line in result.preflight.blocking)
    stored = client.download_artifacts(result.run_id, "nb2prod/preflight_diff.json", dst_path=str(nbs))
    assert json.loads(Path(stored).read_text())["against_run_id"] == baseline
