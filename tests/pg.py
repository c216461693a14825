"""A real PostgreSQL server for the tests (a pytest plugin loaded by conftest.py).

Where the server comes from, in order:

* ``NB2PROD_TEST_PG_URL`` (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``, a role that
  may ``CREATE DATABASE``): used as given. ``.ci/run`` starts a cluster and sets it.
* the machine's own cluster (Debian's ``pg_ctlcluster`` and ``/etc/postgresql``), as root:
  started when it is down (and left running: ``pg_ctlcluster VERSION main stop``), with a
  login role ``nb2prod_test`` whose random password is kept in
  ``~/.cache/nb2prod/test-pg-password`` (mode 0600).
* neither: the tests that need PostgreSQL are skipped with one line saying why; with
  ``CI=true`` they fail instead (CI must run them).

Fixtures: ``pg_server`` (session) is the URL of that role; ``pg_url`` (module) a fresh
database for the test module, dropped after it; ``pg_fresh`` (module) makes fresh, empty
schemas in that database for tests that each need their own store (``pg_fresh("label")``
-> a URL whose ``search_path`` is that schema).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_URL_ENV = "NB2PROD_TEST_PG_URL"
ROLE = "nb2prod_test"
PASSWORD_FILE = Path.home() / ".cache" / "nb2prod" / "test-pg-password"
LOCK_FILE = Path("/tmp/nb2prod-test-pg.lock")


class Url(str):
    """A database URL whose repr hides its password (pytest prints fixture values in failures)."""

    def __repr__(self) -> str:
        return repr(re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(self)))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests must run in CI (CI=true), but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (set {PG_URL_ENV} or install postgresql)")


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as psycopg's own connection string."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).set(database=database).render_as_string(hide_password=False)


def _psql_as_postgres(sql: str) -> None:
    # from / : the postgres user cannot read root's cwd; the SQL goes on stdin, not argv
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
        input=sql,
        text=True,
        cwd="/",
        check=True,
        capture_output=True,
        timeout=60,
    )


def _local_cluster() -> str:
    """Start (when down) the machine's newest cluster and return the URL of the test role."""
    versions = sorted(
        os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".") if p.isdigit()]
    )
    if not versions:
        _unavailable("/etc/postgresql has no cluster")
    version = versions[-1]
    LOCK_FILE.touch(exist_ok=True)
    with LOCK_FILE.open("r+") as lock:  # xdist workers set up one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        status = subprocess.run(
            ["pg_ctlcluster", version, "main", "status"], capture_output=True, check=False
        )
        if status.returncode != 0:
            started = subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            if started.returncode != 0:
                _unavailable(f"pg_ctlcluster {version} main start failed: {started.stderr.strip()[-300:]}")
        listed = subprocess.run(
            ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
        ).stdout.split()
        port = listed[listed.index(version) + 2] if version in listed else "5432"
        if not PASSWORD_FILE.exists():
            PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
            PASSWORD_FILE.write_text(secrets.token_hex(16))
            PASSWORD_FILE.chmod(0o600)
        password = PASSWORD_FILE.read_text().strip()
        _psql_as_postgres(
            "DO $$ BEGIN\n"
            f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN\n"
            f"    CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}';\n"
            f"  ELSE ALTER ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}';\n"
            "  END IF;\nEND $$;\n"
        )
    return f"postgresql+psycopg://{ROLE}:{password}@127.0.0.1:{port}/postgres"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of a role that may create databases on a running PostgreSQL server."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[dev]')")
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if not (shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir()):
            _unavailable("no PostgreSQL server installed (no pg_ctlcluster, no /etc/postgresql)")
        if os.geteuid() != 0:
            _unavailable("the local cluster can be set up only as root")
        try:
            url = _local_cluster()
        except subprocess.CalledProcessError as exc:
            _unavailable(f"setting up the test role failed: {(exc.stderr or '').strip()[-300:]}")
    assert url is not None
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        # a server that was named or set up but does not answer is an error, never a skip
        pytest.fail(
            f"PostgreSQL at {re.sub(r':[^:@/]*@', ':***@', url)} does not answer: {exc}", pytrace=False
        )
    return Url(url)


@pytest.fixture(scope="module")
def pg_url(pg_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for the test module, dropped after it."""
    import psycopg

    module = request.module.__name__.rsplit(".", 1)[-1][:40]
    name = f"t_{module}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield Url(with_database(pg_server, name))
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_fresh(pg_url: str) -> Callable[[str], str]:
    """Fresh, empty stores in the module's database: ``pg_fresh("label")`` -> a URL.

    Each is a schema of its own (the URL sets ``search_path``): creating one costs
    milliseconds where a database costs a checkpoint. They go with the module's database.
    """
    import psycopg
    import sqlalchemy as sa

    def make(label: str = "s") -> str:
        schema = f"s_{re.sub(r'[^a-z0-9]', '_', label.lower())[:40]}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = sa.engine.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
        return Url(url.render_as_string(hide_password=False))

    return make
