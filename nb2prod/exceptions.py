"""One error tree for nb2prod.

Every error a user can meet derives from :class:`Nb2ProdError`. Messages say
what failed and how to fix it. In a notebook, IPython calls
``_render_traceback_`` and shows the message alone, without a Python
traceback: a user mistake is not a crash.
"""

from __future__ import annotations


class Nb2ProdError(Exception):
    """Root of every nb2prod error.

    Attributes:
        hint: How to fix it, shown after the message.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a traceback.
        return [f"nb2prod: {line}" if i == 0 else line for i, line in enumerate(str(self).splitlines())]


class UsageError(Nb2ProdError):
    """The user asked for something that cannot be done as asked."""


class NotStartedError(UsageError):
    """A capture call came before ``start``."""


class VariableNotFoundError(UsageError):
    """A name given to a magic is not defined in the notebook."""

    def __init__(self, name: str, *, hint: str | None = None) -> None:
        super().__init__(f"no variable named '{name}' in the notebook", hint=hint)
        self.name = name


class DataError(UsageError):
    """A dataset cannot be captured (wrong type, unreadable file, ...)."""


class ModelError(UsageError):
    """A model cannot be captured (not fitted, unsupported, unserialisable)."""


class RoundTripError(ModelError):
    """The saved model does not load, or does not predict as the live one."""


class ConfigError(UsageError):
    """A setting has a value that cannot be used."""


class StoreError(Nb2ProdError):
    """The tracking store (MLflow) failed: unreachable, full, refused.

    Attributes:
        not_recorded: What this failure left unrecorded.
    """

    def __init__(self, message: str, *, not_recorded: str, hint: str | None = None) -> None:
        super().__init__(f"{message}; not recorded: {not_recorded}", hint=hint)
        self.not_recorded = not_recorded


class ModelIntegrityError(Nb2ProdError):
    """A registered model's files do not match the sha256 recorded at capture (or none was recorded)."""


class ExportError(Nb2ProdError):
    """A registered model cannot be exported as a Bento (unknown version, changed artifact, failed build)."""


class ServeError(Nb2ProdError):
    """A built Bento cannot be served (none built yet, server failed to start)."""


class LifecycleError(Nb2ProdError):
    """Promotion, rollback, retraining or feedback could not be done (nothing was changed)."""


class ParameterError(UsageError):
    """A notebook parameter is unknown, or its value does not fit the declared default.

    Attributes:
        name: The parameter concerned (None when the notebook has no ``parameters`` cell).
    """

    def __init__(self, message: str, *, name: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.name = name


class PreflightError(UsageError):
    """A re-execution was refused before any cell ran (e.g. ``--strict`` and a changed package)."""


class ExecutionError(Nb2ProdError):
    """A notebook run by nb2prod failed.

    Attributes:
        kind: ``"cell"`` (a cell raised, SystemExit non-zero included), ``"dead_kernel"``,
            ``"timeout"`` or ``"interrupted"`` (the runner got KeyboardInterrupt).
        cell_index: Index of the failing cell in the source notebook (None when unknown).
        executed_index: Index of that cell in the executed notebook (with papermill's injected cell).
        exec_count: Its execution count.
        ename: Exception class name raised in the cell (or the runner's failure type).
        evalue: Its message.
        run_id: The MLflow run that was marked FAILED.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        cell_index: int | None = None,
        executed_index: int | None = None,
        exec_count: int | None = None,
        ename: str = "",
        evalue: str = "",
        run_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.cell_index = cell_index
        self.executed_index = executed_index
        self.exec_count = exec_count
        self.ename = ename
        self.evalue = evalue
        self.run_id = run_id

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable with its keyword-only facts (sweep results cross process boundaries).
        return (
            _rebuild_execution_error,
            (
                self.message,
                self.kind,
                self.cell_index,
                self.executed_index,
                self.exec_count,
                self.ename,
                self.evalue,
                self.run_id,
                self.hint,
            ),
        )


def _rebuild_execution_error(
    message: str,
    kind: str,
    cell_index: int | None,
    executed_index: int | None,
    exec_count: int | None,
    ename: str,
    evalue: str,
    run_id: str | None,
    hint: str | None,
) -> ExecutionError:
    return ExecutionError(
        message,
        kind=kind,
        cell_index=cell_index,
        executed_index=executed_index,
        exec_count=exec_count,
        ename=ename,
        evalue=evalue,
        run_id=run_id,
        hint=hint,
    )


class MonitorError(Nb2ProdError):
    """A drift or performance report cannot be built as asked (bad time window, unreadable store)."""
