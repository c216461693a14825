"""The prediction store's schema versions, on SQLite and on a real PostgreSQL server: a store from
before versioning opens and is stamped, a newer one is refused naming both versions, and
replicas starting together migrate once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from nb2prod.serving.store_schema import MIGRATIONS, SCHEMA_TABLE, SCHEMA_VERSION

# A second schema step for the tests. Its table is created without IF NOT EXISTS and it
# counts its runs, so running it twice fails or shows; its slow statement holds the
# migration open long enough for a racing opener to collide when nothing serialises them.
STEP = """
from nb2prod.serving.store_schema import MIGRATIONS, Migration

SLOW = {
    "postgresql": "SELECT pg_sleep(0.5)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) "
    "SELECT count(*) FROM c",
}

def _v2(dialect):
    return ["CREATE TABLE migration_runs (n INTEGER)", SLOW[dialect], "INSERT INTO migration_runs VALUES (1)"]

WITH_V2 = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "test: counts its runs", _v2))
"""


def raw_execute(location: str, statements: list[str]) -> list[tuple[object, ...]]:
    """Run SQL on the store with the bare driver (no nb2prod in between); the last statement's rows."""
    if "://" not in location:
        conn = sqlite3.connect(location)
        try:
            rows: list[tuple[object, ...]] = []
            for sql in statements:
                rows = conn.execute(sql).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    import psycopg

    from tests.pg import libpq_url

    with psycopg.connect(libpq_url(location), autocommit=True) as pg:
        rows = []
        for sql in statements:
            cur = pg.execute(sql)
            rows = cur.fetchall() if cur.description else []
        return rows


def dialect(location: str) -> str:
    return "postgresql" if "://" in location else "sqlite"


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_store_from_before_versioning_opens_and_is_stamped(location: str) -> None:
    from nb2prod.serving.store import Store

    # version 1's layout as the code before versioning wrote it: the tables, no version table
    raw_execute(
        location,
        [
            *MIGRATIONS[0].statements(dialect(location)),
            "INSERT INTO predictions (request_id, ts, monitor, model_version, features, prediction) "
            "VALUES ('old-1', 1.0, 'm', '1', '{}', '{\"prediction\": 1}')",
            "INSERT INTO control (name, value, updated_at) VALUES ('active', '\"1\"', 5.0)",
        ],
    )
    assert not raw_execute(location, [_has_version_table(location)])
    store = Store(location)
    assert store.control() == {"active": ("1", 5.0)}
    assert store.known_request_ids(["old-1"]) == {"old-1"}
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    stamped = raw_execute(location, [f"SELECT version, description FROM {SCHEMA_TABLE} ORDER BY version"])
    assert [v for v, _ in stamped] == [m.version for m in MIGRATIONS]


def _has_version_table(location: str) -> str:
    if dialect(location) == "sqlite":
        return f"SELECT name FROM sqlite_master WHERE name = '{SCHEMA_TABLE}'"
    return f"SELECT 1 FROM pg_tables WHERE tablename = '{SCHEMA_TABLE}' AND schemaname = current_schema()"


def test_a_newer_store_is_refused_naming_both_versions(location: str) -> None:
    from nb2prod.serving.store import Store

    store = Store(location)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    newer = SCHEMA_VERSION + 5
    raw_execute(
        location,
        [f"INSERT INTO {SCHEMA_TABLE} (version, description, applied_at) VALUES ({newer}, 'future', 0)"],
    )
    # a fresh process, as a service worker or `nb2prod promote` opening the store
    code = textwrap.dedent(
        """
        import sys
        from nb2prod.serving.store import PredictionStoreError, Store
        for readonly in (False, True):
            try:
                Store(sys.argv[1], readonly=readonly).control()
            except PredictionStoreError as exc:
                print(exc)
        """
    )
    out = run_python(code, location)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    for line in lines:
        assert f"schema version {newer}" in line and f"nb2prod's version {SCHEMA_VERSION}" in line
        assert "upgrade nb2prod" in line
        if dialect(location) == "postgresql":  # the URL is named without its password
            assert ":***@" in line and location.split(":")[2].split("@")[0] not in line


def test_a_newer_store_whose_new_steps_are_additive_still_opens(location: str) -> None:
    """A step that only adds what older code never reads (``oldest_reader`` at or below its
    version) leaves the store usable by older code: a service exported before an upgrade
    keeps working beside newer tools."""
    from nb2prod.serving.store import Store

    current = Store(location)
    assert current.schema_version() == SCHEMA_VERSION  # created and migrated
    current.close()
    newer = SCHEMA_VERSION + 1
    raw_execute(
        location,
        [
            f"INSERT INTO {SCHEMA_TABLE} (version, description, applied_at, oldest_reader) "
            f"VALUES ({newer}, 'future, additive', 0, {SCHEMA_VERSION})"
        ],
    )
    for readonly in (False, True):
        store = Store(location, readonly=readonly)
        assert store.control() == {} and store.schema_version() == newer
        store.close()
    raw_execute(
        location,
        [
            f"INSERT INTO {SCHEMA_TABLE} (version, description, applied_at, oldest_reader) "
            f"VALUES ({newer + 1}, 'future, breaking', 0, {newer + 1})"
        ],
    )
    store = Store(location, readonly=True)
    try:
        store.control()
        raise AssertionError("a store with a breaking newer step opened")
    except Exception as exc:
        assert f"schema version {newer + 1}" in str(exc)
    finally:
        store.close()


def test_an_older_store_is_migrated_forward_once(location: str) -> None:
    from nb2prod.serving.store import Store

    namespace: dict[str, object] = {}
    exec(STEP, namespace)
    with_v2 = namespace["WITH_V2"]
    Store(location).close()
    first = Store(location)
    assert first.schema_version() == SCHEMA_VERSION
    first.close()
    upgraded = Store(location, migrations=with_v2)  # type: ignore[arg-type]
    assert upgraded.schema_version() == SCHEMA_VERSION + 1
    upgraded.close()
    again = Store(location, migrations=with_v2)  # type: ignore[arg-type]
    assert again.query("SELECT count(*) FROM migration_runs") == [(1,)]
    again.close()
    versions = raw_execute(location, [f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version"])
    assert [v for (v,) in versions] == [*range(1, SCHEMA_VERSION + 2)]


def test_replicas_starting_together_migrate_once(location: str, tmp_path: Path) -> None:
    """Three upgraded replicas open one store at the same instant; the migration runs once, none fails."""
    from nb2prod.serving.store import Store

    Store(location).control()  # the store as the previous release left it
    script = tmp_path / "open_store.py"
    script.write_text(
        STEP
        + textwrap.dedent(
            """
            import pathlib, sys, time
            from nb2prod.serving.store import Store
            location, rendezvous, me = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
            (rendezvous / f"ready-{me}").touch()
            while not (rendezvous / "go").exists():
                time.sleep(0.005)
            store = Store(location, migrations=WITH_V2)
            print(store.schema_version())
            store.close()
            """
        )
    )
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), location, str(rendezvous), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 60
    while len(list(rendezvous.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    (rendezvous / "go").touch()  # every process has imported what it needs: open at once
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [(rc, out.strip()) for rc, out, _ in results] == [(0, str(SCHEMA_VERSION + 1))] * 3, [
        err[-800:] for _, _, err in results
    ]
    assert raw_execute(location, ["SELECT count(*) FROM migration_runs"]) == [(1,)]
    versions = raw_execute(location, [f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version"])
    assert [v for (v,) in versions] == [*range(1, SCHEMA_VERSION + 2)]
