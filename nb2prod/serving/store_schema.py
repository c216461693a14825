"""The prediction store's tables, versioned: an ordered list of migrations, applied forward on open.

``nb2prod_schema`` holds one row per applied migration (version, what it did, when); the
store's version is the highest. Whoever opens a store read-write first (a service
worker, ``nb2prod promote``, ``nb2prod feedback``) brings it to :data:`SCHEMA_VERSION`
inside one transaction that holds a lock other openers wait for: ``BEGIN IMMEDIATE`` on
SQLite, ``pg_advisory_xact_lock`` on PostgreSQL (whose DDL is transactional, so a
failed migration leaves the store as it was). The others then find the version current
and go on. A store at a higher version than this code knows is refused, naming both, unless
every migration above this code's version was additive (``oldest_reader`` at or below it:
new tables older code never reads, such as ``batch_chunks``), so a running service exported
before an upgrade keeps working beside newer tools. Version 1 code predates that rule and
refuses any newer store.

A store from before versioning has version 1's tables and no ``nb2prod_schema``:
version 1's statements are all ``IF NOT EXISTS``, so they find those tables, and the
store is stamped 1. Later migrations run exactly once (under the lock) and need no
such guard. To change the tables, append a :class:`Migration`; never edit a shipped one.

Plain SQL text, no alembic: this module is copied into every Bento, whose requirements
do not carry alembic, and SQLite stores are written with the standard library alone.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SCHEMA_TABLE = "nb2prod_schema"
DIALECTS = ("sqlite", "postgresql")
# One advisory lock key (per database) for every opener of a prediction store on PostgreSQL.
PG_LOCK_KEY = zlib.crc32(b"nb2prod.prediction_store.migrate")

_TYPES = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "blob": "BLOB"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "blob": "BYTEA"},
}

_V1 = """
CREATE TABLE IF NOT EXISTS predictions (
    seq {serial},
    request_id VARCHAR(64) NOT NULL,
    ts {real} NOT NULL,
    monitor VARCHAR(200) NOT NULL,
    model_version VARCHAR(64),
    features TEXT NOT NULL,
    prediction TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_request_id ON predictions (request_id);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE TABLE IF NOT EXISTS sketches (
    bucket BIGINT NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    col VARCHAR(200) NOT NULL,
    writer VARCHAR(64) NOT NULL,
    n BIGINT NOT NULL,
    counts {blob} NOT NULL,
    PRIMARY KEY (bucket, model_version, col, writer)
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id VARCHAR(64) PRIMARY KEY,
    ts {real} NOT NULL,
    label TEXT NOT NULL,
    source VARCHAR(200)
);
CREATE TABLE IF NOT EXISTS events (
    seq {serial},
    ts {real} NOT NULL,
    kind VARCHAR(32) NOT NULL,
    model_version VARCHAR(64),
    reason VARCHAR(200),
    field VARCHAR(200)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS control (
    name VARCHAR(64) PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at {real} NOT NULL
)
"""

_VERSION_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
    "(version INTEGER PRIMARY KEY, description VARCHAR(200) NOT NULL, applied_at {real} NOT NULL)"
)
_EXISTS = {
    "sqlite": f"SELECT name FROM sqlite_master WHERE type = 'table' AND name = '{SCHEMA_TABLE}'",
    "postgresql": f"SELECT to_regclass('{SCHEMA_TABLE}')::text",
}


# A batch's scored rows, one row a chunk: the chunk's rows as an Arrow IPC stream (``nb2prod/batch/rows.py``
# owns the payload's columns), its rows' numbers ``first_row..last_row`` (request ids
# ``<batch id>-<row>``), the time, model version and row count. Rejected rows leave gaps:
# ``present`` is then the bitmap (numpy ``packbits``) of the logged rows over the span, NULL
# when every row of it was logged. A batch of millions of rows is a few hundred rows here.
_V2 = """
ALTER TABLE nb2prod_schema ADD COLUMN oldest_reader INTEGER;
CREATE TABLE batch_chunks (
    batch_id VARCHAR(64) NOT NULL,
    first_row BIGINT NOT NULL,
    last_row BIGINT NOT NULL,
    n_rows BIGINT NOT NULL,
    ts {real} NOT NULL,
    model_version VARCHAR(64),
    present {blob},
    payload {blob} NOT NULL,
    PRIMARY KEY (batch_id, first_row)
);
CREATE INDEX batch_chunks_ts ON batch_chunks (ts)
"""


class PredictionStoreError(Exception):
    """The prediction store cannot be used as configured: the message says why, ``hint`` the fix."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message} ({hint})" if hint else message)
        self.message = message
        self.hint = hint


class Execute(Protocol):
    """Run one SQL statement with named parameters in the open transaction; the rows it returns."""

    def __call__(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Migration:
    """One step of the store's tables: ``statements(dialect)`` take version ``version - 1`` to ``version``.

    ``oldest_reader``: the oldest schema version whose code can still use a store after this
    step (an additive step, new tables older code never touches: an older version; None: this
    version, older code is refused).
    """

    version: int
    description: str
    statements: Callable[[str], Sequence[str]]
    oldest_reader: int | None = None


def _statements(text: str) -> Callable[[str], list[str]]:
    def for_dialect(dialect: str) -> list[str]:
        return [s.strip() for s in text.format(**_TYPES[dialect]).split(";") if s.strip()]

    return for_dialect


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "predictions, sketches, feedback, events, control", _statements(_V1)),
    Migration(2, "batch_chunks: a batch's scored rows as Arrow IPC, one row a chunk", _statements(_V2), 1),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def read_version(execute: Execute, dialect: str) -> int | None:
    """The store's schema version; None when it has no version table (new, or from before versioning)."""
    found = execute(_EXISTS[dialect])
    if not found or found[0][0] is None:
        return None
    rows = execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}")
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def refuse_newer(execute: Execute, version: int | None, location: str, known: int = SCHEMA_VERSION) -> None:
    """Raise :class:`PredictionStoreError` when the store was migrated by newer code than this,
    and some step above ``known`` was not additive (its ``oldest_reader`` is above ``known``)."""
    if version is None or version <= known:
        return
    # a store above version 1 has the oldest_reader column (version 2 added it)
    rows = execute(
        f"SELECT MAX(COALESCE(oldest_reader, version)) FROM {SCHEMA_TABLE} WHERE version > :known",
        {"known": known},
    )
    needed = version if not rows or rows[0][0] is None else int(rows[0][0])
    if needed > known:
        raise PredictionStoreError(
            f"the prediction store {location} is at schema version {version}, newer than this "
            f"nb2prod's version {known}",
            hint="upgrade nb2prod (and re-export the Bento) to use it, or point "
            "NB2PROD_PREDICTION_STORE at another store",
        )


def migrate(
    execute: Execute, dialect: str, location: str, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Bring the store to the last of ``migrations``, inside the caller's locked transaction.

    Returns:
        The versions applied now (empty when the store was current).

    Raises:
        PredictionStoreError: the store is newer than ``migrations``.
    """
    execute(_VERSION_DDL.format(**_TYPES[dialect]))
    current = read_version(execute, dialect)
    known = migrations[-1].version
    refuse_newer(execute, current, location, known)
    applied = []
    for migration in migrations:
        if current is not None and migration.version <= current:
            continue
        for statement in migration.statements(dialect):
            execute(statement)
        row = {
            "version": migration.version,
            "description": migration.description[:200],
            "applied_at": time.time(),
        }
        if migration.version == 1:  # version 1's table has no oldest_reader yet
            execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, description, applied_at) "
                "VALUES (:version, :description, :applied_at)",
                row,
            )
        else:
            execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, description, applied_at, oldest_reader) "
                "VALUES (:version, :description, :applied_at, :oldest_reader)",
                {**row, "oldest_reader": migration.oldest_reader},
            )
        applied.append(migration.version)
    return applied


def dialect_types(dialect: str) -> Mapping[str, str]:
    """Column type names of ``dialect`` (``serial``, ``real``, ``blob``)."""
    return _TYPES[dialect]
