"""The state of one capture session: the :class:`Session`, the one open per kernel, and what it
learns from the shell (executed cells, the notebook's path, the modules it imported).

Everything else in :mod:`nb2prod.session` reads and changes the open session through
:func:`current` (raises when none is open), :func:`active` (None when none is open),
:func:`activate` and :func:`release`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod import protocol
from nb2prod.config import Settings
from nb2prod.exceptions import NotStartedError, StoreError, UsageError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from mlflow import MlflowClient

    from nb2prod.capture.data import DatasetRecord
    from nb2prod.capture.environment import EnvironmentDiff, EnvironmentSnapshot
    from nb2prod.session.models import ModelRecord

INTERACTIVE = "<interactive>"
"""The notebook key of a session whose notebook file is unknown (a console, a script)."""


@dataclass
class Session:
    """State of one capture session (one kernel, one MLflow run)."""

    settings: Settings
    client: MlflowClient
    run_id: str
    experiment: str
    experiment_id: str
    environment: EnvironmentSnapshot
    previous_run_id: str | None
    diff: EnvironmentDiff | None
    shell: Any = None
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    frames: dict[str, Any] = field(default_factory=dict)
    models: list[ModelRecord] = field(default_factory=list)
    not_recorded: list[str] = field(default_factory=list)
    attached: bool = False
    parameters: dict[str, str] = field(default_factory=dict)
    parameter_names: list[str] = field(default_factory=list)
    gitignored: tuple[str, ...] = ()


_current: Session | None = None


def current() -> Session:
    """The open session.

    Raises:
        NotStartedError: ``start`` has not been called in this kernel.
    """
    if _current is None:
        raise NotStartedError(
            "no capture session is open",
            hint="run %nb2prod start [EXPERIMENT] (Python: nb2prod.start()) first",
        )
    return _current


def active() -> Session | None:
    """The open session, or None when none is open."""
    return _current


def activate(session: Session) -> None:
    """Make ``session`` the open one (``start`` does, once its run exists)."""
    global _current
    _current = session


def release() -> Session | None:
    """Close the open session's slot; returns the session that was open, if any."""
    global _current
    session, _current = _current, None
    return session


def note_not_recorded(error: StoreError) -> None:
    """Count a capture the store refused, so ``status`` shows it (nothing lost silently)."""
    if _current is not None:
        _current.not_recorded.append(error.not_recorded)


def tracking_call(session: Session, what: str, not_recorded: str) -> AbstractContextManager[None]:
    """A block whose store failures become a :class:`StoreError` saying what was not recorded."""
    from nb2prod.tracking import client as tracking

    return tracking.store_call(session.settings, what=what, not_recorded=not_recorded)


def bind_fluent_run(run_id: str) -> None:
    """Make our run MLflow's active run, so the user's own ``mlflow.log_*`` calls land in it."""
    import mlflow

    active_run = mlflow.active_run()
    if active_run is not None and active_run.info.run_id != run_id:
        mlflow.end_run()
    if mlflow.active_run() is None:
        mlflow.start_run(run_id=run_id)


# -- what the shell tells about the notebook ---------------------------------------------------


def shell() -> Any:
    """The running IPython shell, or None outside IPython.

    Read from ``sys.modules``, not imported: a running shell has imported IPython, and the core
    stays free of IPython (only the magics and widgets import it).
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if callable(get_ipython) else None


def executed_cells(shell: Any) -> list[str]:
    """The non-empty cells the shell has run, in order."""
    if shell is None:
        return []
    cells = shell.user_ns.get("In") or []
    return [c for c in cells if isinstance(c, str) and c.strip()]


def notebook_path(shell: Any, explicit: str | Path | None) -> Path | None:
    """The ``.ipynb`` file this kernel runs: given, set by a runner, or told by the frontend."""
    candidates: list[Any] = [explicit, os.environ.get(protocol.NOTEBOOK)]
    if shell is not None:
        candidates.append(shell.user_ns.get("__vsc_ipynb_file__"))
    candidates.append(os.environ.get("JPY_SESSION_NAME"))
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(str(candidate)).expanduser()
        if explicit is not None and candidate is explicit and not path.is_file():
            raise UsageError(
                f"notebook {path} does not exist", hint="pass the path of the .ipynb file you are running"
            )
        if path.suffix == ".ipynb" and path.is_file():
            return path.resolve()
    return None


def user_modules(shell: Any) -> set[str]:
    """Top-level modules the notebook imported: import statements run, plus types of its objects."""
    from nb2prod.capture.notebook import imports_in_code

    if shell is None:
        return {name.split(".")[0] for name in list(sys.modules) if not name.startswith("_")}
    names = set(imports_in_code(executed_cells(shell)))
    hidden = set(getattr(shell, "user_ns_hidden", {}) or {})
    for key, value in list(shell.user_ns.items()):
        if key.startswith("_") or key in hidden:
            continue
        module = getattr(type(value), "__module__", None)
        if isinstance(value, type(sys)):
            module = value.__name__
        if module:
            names.add(module.split(".")[0])
    names.discard("nb2prod")
    names.discard("__main__")
    return names


def snapshot(shell: Any, notebook: str | Path | None) -> EnvironmentSnapshot:
    """The environment snapshot of this kernel and its notebook."""
    from nb2prod.capture import environment

    path = notebook_path(shell, notebook)
    cells = None if path is not None else executed_cells(shell) or None
    return environment.snapshot(
        notebook_path=path,
        code_cells=cells,
        imported_modules=user_modules(shell),
        cwd=path.parent if path is not None else Path.cwd(),
    )


def notebook_key(env: EnvironmentSnapshot) -> str:
    """What identifies the notebook across runs: its path, or :data:`INTERACTIVE`."""
    if env.notebook is not None and env.notebook.path:
        return env.notebook.path
    return INTERACTIVE
