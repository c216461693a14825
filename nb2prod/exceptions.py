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


class ExportError(Nb2ProdError):
    """A registered model cannot be exported as a Bento (unknown version, changed artifact, failed build)."""


class ServeError(Nb2ProdError):
    """A built Bento cannot be served (none built yet, server failed to start)."""
