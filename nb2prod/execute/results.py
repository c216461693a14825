"""What a re-execution returns: the dataclasses of ``run``, ``reproduce`` and ``sweep``.

Pure data, no behaviour beyond reading itself: the CLI, the demo and the loop render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.exceptions import ExecutionError

if TYPE_CHECKING:
    from nb2prod.capture.environment import EnvironmentDiff


@dataclass(frozen=True)
class Preflight:
    """The environment check before a re-execution.

    Attributes:
        against_run_id: The run whose ``environment.json`` was compared (None: nothing to compare).
        diff: Differences from that run's environment to the current one.
        blocking: Differences that ``--strict`` refuses: imported packages and Python.
    """

    against_run_id: str | None
    diff: EnvironmentDiff | None
    blocking: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "against_run_id": self.against_run_id,
            "diff": self.diff.to_dict() if self.diff else None,
            "blocking": list(self.blocking),
        }


@dataclass(frozen=True)
class RunResult:
    """One re-execution of a notebook.

    Attributes:
        run_id: The MLflow run (None only when it could not be opened).
        experiment: Experiment name.
        status: ``FINISHED`` or ``FAILED``.
        notebook: The source notebook key (its path).
        parameters: The typed parameters injected.
        seconds: Wall time of the execution.
        executed_path: Local copy of the executed notebook (partial when the run failed).
        preflight: The environment check.
        error: Why it failed (None when it finished).
        registered: Model name -> registered version.
        metrics: Final metrics of the run.
        data_digests: Dataset name -> digest recorded by the notebook's captures.
        parent_run_id: The sweep run this run belongs to.
    """

    run_id: str | None
    experiment: str
    status: str
    notebook: str
    parameters: dict[str, Any]
    seconds: float
    executed_path: Path | None
    preflight: Preflight
    error: ExecutionError | None = None
    registered: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data_digests: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == "FINISHED"

    def raise_for_failure(self) -> None:
        """Raise the :class:`ExecutionError` of a failed run."""
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class Finding:
    """One comparison between the original run and its reproduction.

    Attributes:
        check: ``run``, ``environment``, ``notebook``, ``data``, ``metric``, ``prediction`` or ``artifact``.
        name: What was compared (package, dataset, metric, model...).
        ok: True when it matches (or is only informative).
        original: Value in the original run.
        new: Value in the reproduction.
        detail: Why it differs, or a note.
    """

    check: str
    name: str
    ok: bool
    original: str | None = None
    new: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "name": self.name,
            "ok": self.ok,
            "original": self.original,
            "new": self.new,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Reproduction:
    """The verdict of ``nb2prod reproduce``.

    The run is reproduced when the re-execution finished and every finding is ok: same Python and
    same versions of every package the notebook imported, same notebook code, the same data
    digests, every metric within ``rtol``, and the same predictions of every model on its recorded
    input example and on every DataFrame the notebook tracked with role test or reference
    (``%nb2prod data DF --role test``): both the original and the re-run model predict it, class
    labels must match exactly, probabilities and regression outputs within ``rtol``, and the
    number of rows that differ is reported. Other installed packages that changed are listed but
    do not count.

    Attributes:
        original_run_id: The run that was reproduced.
        run: The re-execution.
        rtol: Relative tolerance used for metrics and predictions.
        findings: Every comparison made.
    """

    original_run_id: str
    run: RunResult
    rtol: float
    findings: list[Finding]

    @property
    def reproduced(self) -> bool:
        return self.run.ok and all(f.ok for f in self.findings)

    @property
    def reasons(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_run_id": self.original_run_id,
            "run_id": self.run.run_id,
            "reproduced": self.reproduced,
            "rtol": self.rtol,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class SweepResult:
    """A grid of runs under one parent run.

    Attributes:
        parent_run_id: The sweep's own MLflow run; every run of the grid is its child.
        experiment: Experiment name.
        runs: One result per grid point, ranked best first (failed runs last).
        rank_by: Metric used for the ranking (None when no common metric was found).
        ascending: True when lower is better for ``rank_by``.
        where: ``"local processes (N)"`` or the Dask scheduler address.
        seconds: Wall time of the whole sweep.
    """

    parent_run_id: str
    experiment: str
    runs: list[RunResult]
    rank_by: str | None
    ascending: bool
    where: str
    seconds: float

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if not r.ok]

    @property
    def best(self) -> RunResult | None:
        ok = [r for r in self.runs if r.ok and self.rank_by in r.metrics]
        return ok[0] if ok else None
