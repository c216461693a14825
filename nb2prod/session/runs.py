"""Opening, reading and closing the capture session's MLflow run: ``start``, ``status``, ``end``.

``start`` takes the environment snapshot and the notebook digest, opens a run (or, under
``nb2prod run``, attaches to the runner's run, see :mod:`nb2prod.protocol`) and compares the
environment with the notebook's previous run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod import protocol
from nb2prod.config import load_settings
from nb2prod.exceptions import StoreError, UsageError
from nb2prod.session import state
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.capture.data import DatasetRecord
    from nb2prod.capture.environment import EnvironmentDiff, EnvironmentSnapshot
    from nb2prod.session.models import ModelRecord

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
KIND_CAPTURE = "capture"


@dataclass(frozen=True)
class StartResult:
    """A capture session that has begun.

    Attributes:
        run_id: The MLflow run every capture of this session goes to.
        experiment: Experiment name.
        tracking_uri: Store, password hidden.
        environment: The environment snapshot logged as ``environment.json``.
        previous_run_id: The last earlier run of the same notebook, if any.
        diff: What changed since that run (None without one).
        gitignored: Entries this start added to the project's ``.gitignore`` (commit it).
    """

    run_id: str
    experiment: str
    tracking_uri: str
    environment: EnvironmentSnapshot
    previous_run_id: str | None
    diff: EnvironmentDiff | None
    gitignored: tuple[str, ...]


@dataclass(frozen=True)
class StatusReport(StartResult):
    """Everything a session has recorded so far: its start, then what it captured.

    Attributes:
        datasets: Datasets tracked, in order.
        models: Models registered (or recorded for the runner), in order.
        not_recorded: What the store refused (nothing is lost silently).
    """

    datasets: list[DatasetRecord]
    models: list[ModelRecord]
    not_recorded: list[str]


def _run_tags(snap: EnvironmentSnapshot, key: str, extra: dict[str, str] | None) -> dict[str, str]:
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_TYPE

    tags = {
        names.TAG_KIND: KIND_CAPTURE,
        names.TAG_NOTEBOOK: key,
        names.TAG_ENV_DIGEST: snap.digest,
        names.TAG_SOURCE_NAME: key,
        MLFLOW_SOURCE_TYPE: "NOTEBOOK",
    }
    if snap.notebook is not None:
        tags[names.TAG_NOTEBOOK_DIGEST] = snap.notebook.code_digest
    if snap.git is not None and snap.git.commit:
        tags[names.TAG_GIT_COMMIT] = snap.git.commit
        tags[MLFLOW_GIT_COMMIT] = snap.git.commit
    tags.update(extra or {})
    return tags


def start(
    experiment: str | None = None,
    *,
    notebook: str | Path | None = None,
    home: str | Path | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> StartResult:
    """Open the capture session: environment snapshot, notebook digest, an MLflow run.

    A session already open in this kernel is finished first.

    Raises:
        StoreError: The tracking store could not be reached or written; no session was opened.
    """
    from nb2prod.capture import environment as env_mod
    from nb2prod.capture.distributions import requirements_txt
    from nb2prod.tracking import client as tracking

    settings = load_settings(home, tracking_uri=tracking_uri, experiment=experiment)
    shell = state.shell()
    if state.active() is not None:
        end()
    tracking.check_reachable(settings)
    from nb2prod.session import gitignore

    ignored = gitignore.ensure(settings.home)  # before the snapshot: its git state sees the file
    snap = state.snapshot(shell, notebook)
    key = state.notebook_key(snap)
    run_tags = _run_tags(snap, key, tags)

    attach_to = os.environ.get(protocol.RUN_ID) or None
    with tracking.store_call(settings, what="opening the MLflow run", not_recorded="the whole session"):
        client = tracking.client(settings)
        if attach_to:
            # A runner (nb2prod run) opened the run: capture into it, it owns the run's status.
            run = client.get_run(attach_to)
            experiment_id = run.info.experiment_id
            experiment_name = client.get_experiment(experiment_id).name
            if settings.experiment != experiment_name:
                run_tags[names.TAG_REQUESTED_EXPERIMENT] = settings.experiment
            settings = settings.with_(experiment=experiment_name)
            previous = tracking.previous_run_id(client, experiment_id, key, exclude=attach_to)
        else:
            experiment_id = tracking.ensure_experiment(settings, client, settings.experiment)
            previous = tracking.previous_run_id(client, experiment_id, key)
        if previous:
            run_tags[names.TAG_PREVIOUS_RUN] = previous
        if attach_to:
            for tag_key, value in run_tags.items():
                if tag_key != names.TAG_KIND:
                    client.set_tag(attach_to, tag_key, value)
        else:
            run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        with tracking.store_call(
            settings, what="logging the environment", not_recorded=names.ENVIRONMENT_JSON
        ):
            tracking.log_json(client, run_id, snap.to_dict(), names.ENVIRONMENT_JSON)
            client.log_text(run_id, requirements_txt(snap), names.REQUIREMENTS_TXT)
    except StoreError:
        if not attach_to:
            _fail_run(client, run_id)
        raise

    diff = None
    missed: list[str] = []
    if previous:
        old = tracking.load_json_artifact(client, previous, names.ENVIRONMENT_JSON)
        if old is not None:
            diff = env_mod.diff(env_mod.EnvironmentSnapshot.from_dict(old), snap)
            try:
                tracking.log_json(client, run_id, diff.to_dict(), names.ENVIRONMENT_DIFF_JSON)
            except Exception:
                missed.append(names.ENVIRONMENT_DIFF_JSON)
    state.bind_fluent_run(run_id)
    if settings.warm_roundtrip:
        from nb2prod.capture.models import WARM

        WARM.prewarm(settings.tracking_uri)  # imports and store ready before the model is
    opened = state.Session(
        settings=settings,
        client=client,
        run_id=run_id,
        experiment=settings.experiment,
        experiment_id=experiment_id,
        environment=snap,
        previous_run_id=previous,
        diff=diff,
        shell=shell,
        not_recorded=missed,
        attached=bool(attach_to),
        gitignored=tuple(ignored),
    )
    state.activate(opened)
    if not attach_to:  # a runner ends its own run, and logged the parameter values it injected
        _end_at_exit()
        try:
            _first_parameters(opened, state.notebook_path(shell, notebook))
        except StoreError as exc:
            opened.not_recorded.append(exc.not_recorded)
    return StartResult(
        run_id=run_id,
        experiment=settings.experiment,
        tracking_uri=tracking.redact_uri(settings.tracking_uri),
        environment=snap,
        previous_run_id=previous,
        diff=diff,
        gitignored=tuple(ignored),
    )


_SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|api_?key|credential|private", re.IGNORECASE)
_MAX_PARAM = 6000


def param_value(name: str, value: Any) -> str:
    """A parameter's value as an MLflow run parameter (as ``nb2prod run`` logs them); secrets masked."""
    if _SECRET_NAME.search(name):
        return "***"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_MAX_PARAM]


def _first_parameters(session: state.Session, notebook: Path | None) -> None:
    """Log the values of the notebook's ``parameters`` cell as run parameters (``mlflow ui`` compares
    runs by them): the names from the saved cell, the values the kernel holds (else the cell's)."""
    from nb2prod.capture.notebook import parameters_cell

    found = parameters_cell(notebook) if notebook is not None else None
    if found is None:
        return
    session.parameter_names = found[1]
    _sync(session, found[0])


def sync_parameters(cell_source: str) -> list[str]:
    """After a cell ran: log parameters it set that the run does not have yet; returns the names
    whose value changed since they were logged (MLflow keeps a run's parameters fixed).

    Only a cell that assigns a parameter name counts; nothing happens without an open session.
    """
    session = state.active()
    if session is None or session.attached or not session.parameter_names:
        return []
    from nb2prod.capture.notebook import assigned_names

    if not set(assigned_names(cell_source)) & set(session.parameter_names):
        return []
    return _sync(session, cell_source)


def _sync(session: state.Session, cell_source: str) -> list[str]:
    import ast

    ns = session.shell.user_ns if session.shell is not None else {}
    literals: dict[str, Any] = {}
    try:
        for node in ast.parse(cell_source).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        with contextlib.suppress(ValueError, TypeError, SyntaxError, RecursionError):
                            literals[target.id] = ast.literal_eval(node.value)
    except SyntaxError:
        pass
    values: dict[str, str] = {}
    for name in session.parameter_names:
        if name in ns:
            values[name] = param_value(name, ns[name])
        elif name in literals:
            values[name] = param_value(name, literals[name])
    new = {k: v for k, v in values.items() if k not in session.parameters}
    changed = [k for k, v in values.items() if k in session.parameters and session.parameters[k] != v]
    if new:
        from mlflow.entities import Param

        with state.tracking_call(session, "logging the notebook's parameters", "the run's parameters"):
            session.client.log_batch(session.run_id, params=[Param(k, v) for k, v in new.items()])
        session.parameters.update(new)
    for name in changed:
        note = (
            f"parameter {name} changed to {values[name]} after it was logged as {session.parameters[name]} "
            "(MLflow keeps a run's parameters: %nb2prod start opens a new run)"
        )
        if note not in session.not_recorded:
            session.not_recorded.append(note)
    return changed


_exit_hook = False


def _end_at_exit() -> None:
    """End the open run as FINISHED when the interpreter exits (a kernel shut down or restarted),
    so it does not stay "Running" in MLflow. A runner ends its own run (the hook skips it)."""
    global _exit_hook
    if _exit_hook:
        return
    import atexit

    def finish() -> None:
        session = state.active()
        if session is not None and not session.attached:
            with contextlib.suppress(Exception):
                end("FINISHED")

    atexit.register(finish)
    _exit_hook = True


def _fail_run(client: MlflowClient, run_id: str) -> None:
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, status="FAILED")


def end(status: str = "FINISHED") -> str | None:
    """Finish the open session's run (``FINISHED`` or ``FAILED``); returns its id, None if none was open."""
    if status not in RUN_STATUSES:
        raise UsageError(f"unknown run status {status!r}", hint="use FINISHED, FAILED or KILLED")
    session = state.release()
    if session is None:
        return None
    from nb2prod.capture.models import WARM

    WARM.stop()
    import mlflow

    active = mlflow.active_run()
    if session.attached:
        # The runner that opened the run sets its final status.
        return session.run_id
    with state.tracking_call(session, f"ending run {session.run_id}", f"the run's {status} status"):
        if active is not None and active.info.run_id == session.run_id:
            mlflow.end_run(status=status)
        else:
            session.client.set_terminated(session.run_id, status=status)
    return session.run_id


def status() -> StatusReport:
    """Everything the open session has recorded."""
    from nb2prod.tracking import client as tracking

    session = state.current()
    return StatusReport(
        run_id=session.run_id,
        experiment=session.experiment,
        tracking_uri=tracking.redact_uri(session.settings.tracking_uri),
        environment=session.environment,
        previous_run_id=session.previous_run_id,
        diff=session.diff,
        gitignored=session.gitignored,
        datasets=list(session.datasets.values()),
        models=list(session.models),
        not_recorded=list(session.not_recorded),
    )
