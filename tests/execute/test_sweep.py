"""nb2prod sweep: a grid of child runs under one parent, on local processes or a real Dask
LocalCluster; ranking."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nb2prod.exceptions import ParameterError, UsageError
from nb2prod.execute import Preflight, RunResult, parse_grid, rank, sweep
from tests.execute.runs import cli, runs


def test_grid_parsing() -> None:
    assert parse_grid({"C": "0.1, 1,10"}) == {"C": ["0.1", "1", "10"]}
    with pytest.raises(ParameterError, match="empty"):
        parse_grid({"C": "0.1,,1"})


@pytest.mark.slow
def test_local_sweep_ranks_child_runs_and_survives_a_failed_one(nbs: Path, client: Any) -> None:
    # The experiment exists, so the parent run and the runner's writes take the SQLite path
    # (nb2prod.runstore); the Dask test below opens a new experiment through MLflow.
    client.create_experiment(
        "demo", artifact_location=(nbs.parent / ".nb2prod" / "artifacts" / "demo").as_uri()
    )
    proc = cli("sweep", str(nbs / "params.ipynb"), "-p", "x", "1,2", "-p", "n", "1,2", "--jobs", "2")
    assert proc.returncode == 1, proc.stderr  # one grid point fails on purpose
    assert "2 local worker processes" in proc.stdout
    rows = [
        line for line in proc.stdout.splitlines() if "│" in line and ("FINISHED" in line or "FAILED" in line)
    ]
    assert len(rows) == 4
    assert "FAILED (cell 2)" in rows[-1]
    assert "FAILED x=2, n=2: the notebook failed in cell 2" in proc.stdout and "AssertionError" in proc.stdout
    assert [r.split("│")[4].strip() for r in rows[:3]] == ["2", "2", "1"]  # test_score, higher is better
    (parent,) = [r for r in runs(client) if r.data.tags.get("nb2prod.kind") == "sweep"]
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
    from nb2prod.execute.sweep import _host, _local_hosts

    assert _host("tcp://10.1.2.3:40123") == "10.1.2.3"
    assert _host("tcp://[::1]:40123") == "::1"
    assert "127.0.0.1" in _local_hosts() and "10.1.2.3" not in _local_hosts()


def test_rank_puts_failed_runs_last_and_knows_lower_is_better() -> None:
    def r(value: float | None, status: str = "FINISHED") -> RunResult:
        metrics = {"test_log_loss": value} if value is not None else {}
        return RunResult("id", "e", status, "nb", {}, 0.0, None, Preflight(None, None), metrics=metrics)

    ranked, ascending = rank([r(0.5), r(None, "FAILED"), r(0.1), r(None)], "test_log_loss")
    assert ascending
    assert [x.metrics.get("test_log_loss") for x in ranked] == [0.1, 0.5, None, None]
    assert ranked[-1].status == "FAILED"
