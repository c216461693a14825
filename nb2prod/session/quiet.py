"""Quieting library chatter that is not the notebook user's business.

A new SQLite store makes MLflow log "Creating initial MLflow database tables..." and "Updating
database tables" at INFO, and alembic its migration steps: in a notebook they show as red
stderr on the first ``%nb2prod start``. Warnings and errors still show.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

CHATTY_LOGGERS = ("mlflow.store.db.utils", "mlflow.store.db", "alembic", "alembic.runtime.migration")


@contextlib.contextmanager
def library_logs(level: int = logging.WARNING) -> Iterator[None]:
    """Raise the chatty loggers to ``level`` for the duration of the block, then restore them."""
    saved = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)
