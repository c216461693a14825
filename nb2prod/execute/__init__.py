"""Re-execution with papermill: ``run``, ``reproduce`` and ``sweep`` as tracked MLflow runs.

The pure core behind ``nb2prod run|reproduce|sweep``: functions return dataclasses and raise
:mod:`nb2prod.exceptions` errors; nothing here formats for a terminal or imports click.

=================  ==========================================================================
module             owns
=================  ==========================================================================
``parameters``     the ``parameters`` cell: inspection, checking and typing of values
``results``        the dataclasses returned: RunResult, Preflight, Finding, Reproduction...
``handover``       runner -> kernel: the kernel's environment, the run id just in time
``engine``         the ``nb2prod`` papermill engine (entry point ``papermill.engine``)
``failure``        one ExecutionError for whatever failed a run, naming the source cell
``run``            ``run_notebook``: the pre-flight check, opening and finishing the run
``reproduce``      ``reproduce``: re-run a stored notebook and give a verdict
``compare``        ``compare_runs``: environment, code, data, metric and prediction findings
``sweep``          ``sweep``: grid, ranking, local fork-server pool and Dask pool
=================  ==========================================================================

papermill, mlflow and nbconvert are imported inside functions: ``import nb2prod.execute``
stays light (papermill imports :mod:`nb2prod.execute.engine`, and with it this package,
whenever papermill itself is imported). The names below are imported last, so that
``nb2prod.execute.reproduce`` and ``nb2prod.execute.sweep`` are the functions; their modules
are ``sys.modules["nb2prod.execute.reproduce"]``, or ``from nb2prod.execute.sweep import ...``.
"""

from __future__ import annotations

from nb2prod.execute.compare import ReferenceFrame, compare_runs
from nb2prod.execute.handover import ENGINE_NAME
from nb2prod.execute.parameters import (
    ParameterSpec,
    check_parameters,
    inspect_parameters,
    load_params_file,
)
from nb2prod.execute.reproduce import reproduce
from nb2prod.execute.results import Finding, Preflight, Reproduction, RunResult, SweepResult
from nb2prod.execute.run import current_environment, preflight, run_notebook
from nb2prod.execute.sweep import DASK_CONNECT_TIMEOUT, expand_grid, parse_grid, rank, sweep

__all__ = [
    "DASK_CONNECT_TIMEOUT",
    "ENGINE_NAME",
    "Finding",
    "ParameterSpec",
    "Preflight",
    "ReferenceFrame",
    "Reproduction",
    "RunResult",
    "SweepResult",
    "check_parameters",
    "compare_runs",
    "current_environment",
    "expand_grid",
    "inspect_parameters",
    "load_params_file",
    "parse_grid",
    "preflight",
    "rank",
    "reproduce",
    "run_notebook",
    "sweep",
]
