"""Re-execution: nb2prod run / reproduce / sweep on real kernels, a real MLflow store and a real
Dask LocalCluster. Test notebooks live in tests/notebooks/ (some are papermill's own)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nb2prod.exceptions import ParameterError, PreflightError, UsageError
from nb2prod.execute import (
    EXECUTED_ARTIFACT,
    HTML_ARTIFACT,
    PARAMS_ARTIFACT,
    SOURCE_ARTIFACT,
    check_parameters,
    inspect_parameters,
    load_params_file,
    parse_grid,
    rank,
    reproduce,
    run_notebook,
    sweep,
)

NOTEBOOKS = Path(__file__).parent / "notebooks"


@pytest.fixture
def nbs(project: Path) -> Path:
    """The test notebooks, copied into the project (runs record their paths)."""
    folder = project / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    return folder


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2prod", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ,
    )


def _artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= _artifacts(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def _runs(client: Any) -> list[Any]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


# --------------------------------------------------------------------------- parameters (no kernel)


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


def test_params_file_and_grid_parsing(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("x: 0.5\nname: b\n", encoding="utf-8")
    assert load_params_file(file) == {"x": 0.5, "name": "b"}
    file.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ParameterError, match="mapping"):
        load_params_file(file)
    assert parse_grid({"C": "0.1, 1,10"}) == {"C": ["0.1", "1", "10"]}
    with pytest.raises(ParameterError, match="empty"):
        parse_grid({"C": "0.1,,1"})


def test_missing_notebook_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="notebook not found"):
        check_parameters(tmp_path / "nope.ipynb", {"x": 1})


def test_cli_refuses_bad_parameters_before_anything_runs(project: Path, client: Any) -> None:
    proc = _cli("run", str(NOTEBOOKS / "params.ipynb"), "-p", "nmae", "b")
    assert proc.returncode == 2, proc.stderr
    assert "did you mean 'name'" in proc.stderr
    assert _runs(client) == []


def test_help_documents_exit_codes() -> None:
    out = _cli("run", "--help").stdout
    for code in ("0 ", "2 ", "3 ", "4 ", "5 ", "130"):
        assert code in out
    assert "kernel died" in out and "--timeout" in out
    assert "not reproduced" in _cli("reproduce", "--help").stdout
    assert "some runs failed" in _cli("sweep", "--help").stdout


# --------------------------------------------------------------------------- run (real kernels)


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
    assert len(_runs(client)) == 1
    files = _artifacts(client, first.run_id)
    assert {SOURCE_ARTIFACT, EXECUTED_ARTIFACT, HTML_ARTIFACT, PARAMS_ARTIFACT, "environment.json"} <= files
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
    proc = _cli("run", str(nbs / "raises.ipynb"), "--no-progress")
    assert proc.returncode == 3, proc.stderr
    assert "the notebook failed in cell 3" in proc.stderr
    assert "ValueError: boom" in proc.stderr
    assert "marked FAILED" in proc.stderr
    (run,) = _runs(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["nb2prod.failure.kind"] == "cell"
    files = _artifacts(client, run.info.run_id)
    assert {EXECUTED_ARTIFACT, HTML_ARTIFACT, "registry/should-not-exist.json"} <= files
    local = client.download_artifacts(run.info.run_id, EXECUTED_ARTIFACT, dst_path=str(nbs))
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
    assert EXECUTED_ARTIFACT in _artifacts(client, result.run_id)
    source = nbformat.read(str(nbs / notebook), as_version=4)
    assert source.cells[cell].cell_type == "code"


@pytest.mark.slow
def test_timeout_fails_with_exit_code_5(nbs: Path, client: Any) -> None:
    started = time.perf_counter()
    proc = _cli("run", str(nbs / "slow.ipynb"), "--timeout", "3", "--no-progress")
    assert proc.returncode == 5, proc.stderr
    assert time.perf_counter() - started < 50
    assert "cell 1" in proc.stderr and "timeout" in proc.stderr
    (run,) = _runs(client)
    assert run.info.status == "FAILED" and run.data.tags["nb2prod.failure.kind"] == "timeout"


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
    while time.time() < deadline and not _runs(client):
        time.sleep(0.5)
    time.sleep(4)  # into the sleep(60) cell
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (run,) = _runs(client)
    assert run.info.status == "FAILED" and run.data.tags["nb2prod.failure.kind"] == "interrupted"


# --------------------------------------------------------------------------- pre-flight


def _fake_baseline(client: Any, nb: Path, change: dict[str, str]) -> str:
    """A finished run whose environment.json differs from this one in ``change``."""
    from nb2prod.capture import environment

    snap = environment.snapshot(notebook_path=nb).to_dict()
    snap["distributions"].update(change)
    snap["imported"].update({k: v for k, v in change.items() if k in snap["imported"]})
    exp = client.create_experiment("baseline")
    run = client.create_run(exp, tags={"nb2prod.notebook": str(nb)})
    client.log_text(run.info.run_id, json.dumps(snap), "environment.json")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_strict_refuses_before_anything_runs_when_an_imported_package_differs(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    baseline = _fake_baseline(client, nb, {"mlflow": "0.0.1"})
    with pytest.raises(PreflightError, match=r"mlflow 0\.0\.1 → .*\(upgraded\)"):
        run_notebook(nb, strict=True, against=baseline, progress=False)
    assert len(_runs(client)) == 1  # only the baseline: no run was opened


@pytest.mark.slow
def test_non_strict_run_records_the_difference(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    baseline = _fake_baseline(client, nb, {"mlflow": "0.0.1", "some-unrelated-dist": "1.0"})
    result = run_notebook(nb, progress=False)  # the last run of this notebook is the baseline
    assert result.ok
    assert result.preflight.against_run_id == baseline
    assert any(line.startswith("mlflow 0.0.1") for line in result.preflight.blocking)
    stored = client.download_artifacts(result.run_id, "nb2prod/preflight_diff.json", dst_path=str(nbs))
    assert json.loads(Path(stored).read_text())["against_run_id"] == baseline


# --------------------------------------------------------------------------- reproduce


@pytest.mark.slow
def test_reproduce_gives_a_verdict_and_reasons(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    same = run_notebook(nb, {"x": "1.5"}, progress=False)
    # The snapshot is what is re-run, not the file on disk: change the file afterwards.
    nb.write_text(nb.read_text().replace("x * n", "x * n * 100"))
    verdict = reproduce(same.run_id, progress=False)
    assert verdict.reproduced, [f for f in verdict.findings if not f.ok]
    assert verdict.run.parameters == {"x": 1.5}
    tags = client.get_run(verdict.run.run_id).data.tags
    assert tags["nb2prod.reproduces"] == same.run_id and tags["nb2prod.reproduced"] == "true"
    assert {f.check for f in verdict.findings} >= {"environment", "notebook", "metric"}

    noisy = run_notebook(nb, {"noise": "1"}, progress=False)
    proc = _cli("reproduce", noisy.run_id, "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "NOT REPRODUCED" in proc.stdout
    assert "DIFF metric      test_score" in proc.stdout and "> rtol" in proc.stdout
    # A loose tolerance accepts it (noise < 1 on 300.0 is within 1 %).
    assert _cli("reproduce", noisy.run_id, "--rtol", "0.01", "--no-progress").returncode == 0


def test_reproduce_unknown_run_is_a_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="no run"):
        reproduce("0" * 32, progress=False)


# --------------------------------------------------------------------------- sweep


@pytest.mark.slow
def test_local_sweep_ranks_child_runs_and_survives_a_failed_one(nbs: Path, client: Any) -> None:
    # The experiment exists, so the parent run and the runner's writes take the SQLite path
    # (nb2prod.runstore); the Dask test below opens a new experiment through MLflow.
    client.create_experiment(
        "demo", artifact_location=(nbs.parent / ".nb2prod" / "artifacts" / "demo").as_uri()
    )
    proc = _cli("sweep", str(nbs / "params.ipynb"), "-p", "x", "1,2", "-p", "n", "1,2", "--jobs", "2")
    assert proc.returncode == 1, proc.stderr  # one grid point fails on purpose
    assert "2 local worker processes" in proc.stdout
    rows = [
        line for line in proc.stdout.splitlines() if "│" in line and ("FINISHED" in line or "FAILED" in line)
    ]
    assert len(rows) == 4
    assert "FAILED (cell 2)" in rows[-1]
    assert "FAILED x=2, n=2: the notebook failed in cell 2" in proc.stdout and "AssertionError" in proc.stdout
    assert [r.split("│")[4].strip() for r in rows[:3]] == ["2", "2", "1"]  # test_score, higher is better
    (parent,) = [r for r in _runs(client) if r.data.tags.get("nb2prod.kind") == "sweep"]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert failed.data.params == {"x": "2.0", "n": "2"}
    # Two kernels side by side: each one's BLAS/OpenMP pools get cores / 2 threads, not every core.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
    assert {c.data.tags["omp_threads"] for c in children} == {threads}
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == f"params-{parent.info.run_id[:6]}"  # named by the SQLite path
    assert parent.data.tags["nb2prod.sweep.failed"] == "1"
    assert parent.data.metrics["best_test_score"] == 2.0
    assert client.get_run(parent.data.tags["nb2prod.sweep.best_run"]).data.metrics["test_score"] == 2.0


@pytest.mark.slow
def test_sweep_on_a_dask_local_cluster(nbs: Path, client: Any) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1") as cluster:
        result = sweep(nbs / "params.ipynb", {"x": "1,3"}, scheduler=cluster.scheduler_address)
    assert result.where.startswith("Dask scheduler tcp://127.0.0.1")
    assert [r.metrics["test_score"] for r in result.runs] == [9.0, 3.0]
    for r in result.runs:
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["omp_threads"] == (os.environ.get("OMP_NUM_THREADS") or "1")  # the nanny's cap
        # The notebook travelled with the task; the run records the source notebook.
        assert run.data.tags["nb2prod.notebook"] == str(nbs / "params.ipynb")


def test_sweep_refuses_an_unreachable_scheduler(nbs: Path) -> None:
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler"):
        sweep(nbs / "params.ipynb", {"x": "1"}, scheduler="tcp://127.0.0.1:9")


def test_worker_hosts_are_parsed_for_the_sqlite_check() -> None:
    from nb2prod.execute import _host, _local_hosts

    assert _host("tcp://10.1.2.3:40123") == "10.1.2.3"
    assert _host("tcp://[::1]:40123") == "::1"
    assert "127.0.0.1" in _local_hosts() and "10.1.2.3" not in _local_hosts()


def test_rank_puts_failed_runs_last_and_knows_lower_is_better() -> None:
    from nb2prod.execute import Preflight, RunResult

    def r(value: float | None, status: str = "FINISHED") -> RunResult:
        metrics = {"test_log_loss": value} if value is not None else {}
        return RunResult("id", "e", status, "nb", {}, 0.0, None, Preflight(None, None), metrics=metrics)

    ranked, ascending = rank([r(0.5), r(None, "FAILED"), r(0.1), r(None)], "test_log_loss")
    assert ascending
    assert [x.metrics.get("test_log_loss") for x in ranked] == [0.1, 0.5, None, None]
    assert ranked[-1].status == "FAILED"


def _write_data(path: Path, shift: float) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    label = (a + b > 0).astype(int)
    pd.DataFrame({"a": a + shift * label, "b": b, "label": label}).to_csv(path, index=False)


@pytest.mark.slow
def test_reproduce_names_changed_data_metrics_and_predictions(nbs: Path, client: Any) -> None:
    nb = nbs / "tiny_model.ipynb"
    _write_data(nbs / "data.csv", 0.0)
    first = run_notebook(nb, progress=False)
    assert first.ok, first.error
    assert first.registered == {"tiny": "1"}
    assert set(first.data_digests) >= {"train", "test"}
    assert "test_accuracy" in first.metrics
    # Same data: reproduced, and both models re-predicted the whole test frame, not only the example.
    same = reproduce(first.run_id, progress=False)
    assert same.reproduced, same.reasons
    on_test = next(f for f in same.findings if (f.check, f.name) == ("prediction", "tiny on test"))
    assert on_test.ok
    assert (
        on_test.detail
        == "same predictions on all 20 rows of test data 'test', the original's data (same digest)"
    )
    # Same file name, different content: the data digests must tell.
    _write_data(nbs / "data.csv", 3.0)
    verdict = reproduce(first.run_id, progress=False)
    assert not verdict.reproduced
    reasons = {(f.check, f.name) for f in verdict.reasons}
    assert {
        ("data", "train"),
        ("data", "test"),
        ("prediction", "tiny"),
        ("prediction", "tiny on test"),
    } <= reasons
    on_test = next(f for f in verdict.reasons if f.name == "tiny on test")
    assert "of 20 rows differ" in on_test.detail and "test data 'test'" in on_test.detail
    # both models predicted the rows the original run stored (recorded at capture), not the new data
    assert "the original's data (same digest)" in on_test.detail
    assert any(check == "metric" for check, _ in reasons)
    assert ("environment", "other packages") not in reasons and ("notebook", "code digest") not in reasons
    train = next(f for f in verdict.reasons if f.name == "train")
    assert train.original == first.data_digests["train"] and train.detail == "content differs"
    # A reproduction checks; it registers nothing.
    assert verdict.run.registered == {}
    assert [str(v.version) for v in client.search_model_versions("name = 'tiny'")] == ["1"]
